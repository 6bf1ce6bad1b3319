"""Prompt ensembles: K prompts scored in one mixed-prompt batch equal K separate scorings; combination rules."""

from __future__ import annotations

import stat

import pytest
import torch

from ptune.data.spec import TaskSpec
from ptune.data.splits import Example
from ptune.errors import ArtifactError, ConfigError
from ptune.evaluation.ensemble import combine, evaluate_ensemble, member_scores, summary_markdown
from ptune.evaluation.scoring import evaluate, score_labels
from ptune.model.artifacts import PromptMeta, load_prompt, save_prompt
from ptune.model.batching import encode_source
from ptune.model.ensemble_artifact import load_ensemble, save_ensemble

SPEC = TaskSpec(name="toy", kind="classification", source=None, columns=("text",), formatter=lambda row: (row["text"], ""),
                label_words=("good", "bad", "neutral"))
TEXTS = ["the film was witty", "a dull boring plot and sad actor", "news", "gorgeous fun story, great game won"]


def _prompts(base, k=3, p=4):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(k, p, base.hidden_size, generator=gen) * 0.5  # (K, P, d)


def test_one_mixed_batch_equals_each_prompt_scored_alone(tiny_base):
    prompts = _prompts(tiny_base)
    together = member_scores(tiny_base, SPEC, TEXTS, prompts, batch_size=5)  # 1 source x 3 prompts per batch
    assert together.shape == (len(TEXTS), 3, 3)
    ids = [encode_source(tiny_base.tokenizer, t, SPEC.max_source_tokens, tiny_base.is_encoder_decoder) for t in TEXTS]
    for j in range(3):
        with torch.inference_mode():
            alone = torch.log_softmax(score_labels(tiny_base, ids, SPEC.label_words, prompts[j]).float(), -1)
        torch.testing.assert_close(together[:, j], alone, atol=2e-5, rtol=1e-4)


def test_members_match_single_prompt_evaluation(tiny_causal):
    prompts = _prompts(tiny_causal)
    examples = [Example(str(i), t, SPEC.label_words[i % 3], {}) for i, t in enumerate(TEXTS)]
    found = evaluate_ensemble(tiny_causal, SPEC, examples, prompts, batch_size=6)
    for j, member in enumerate(found.members):
        single = evaluate(tiny_causal, SPEC, examples, prompts[j], progress=False)
        assert member.predictions == single.predictions and member.metrics == single.metrics
    accs = [m.metrics["test/accuracy"] for m in found.members]
    assert found.best_single == max(accs) and found.mean_single == pytest.approx(sum(accs) / 3)
    table = summary_markdown("toy", found)
    assert "| best single prompt |" in table and "| mean of 3 prompts |" in table and "**ensemble**" in table


def test_mean_and_vote_combination():
    logp = torch.log(torch.tensor([[[0.9, 0.1], [0.4, 0.6], [0.45, 0.55]],    # votes 1:2 for label 1, mean -> 0
                                   [[0.2, 0.8], [0.3, 0.7], [0.6, 0.4]]]))   # both pick label 1
    assert combine(logp, "mean").tolist() == [0, 1]
    assert combine(logp, "vote").tolist() == [1, 1]
    tie = torch.log(torch.tensor([[[0.9, 0.1], [0.4, 0.6]]]))  # one vote each: the higher mean wins
    assert combine(tie, "vote").tolist() == [0]
    with pytest.raises(ConfigError, match="allowed values"):
        combine(logp, "median")


def test_ensemble_artifact_round_trip_and_checks(tiny_causal, tmp_path):
    prompts = _prompts(tiny_causal, k=2)
    metas = [PromptMeta("toy", tiny_causal.spec, tiny_causal.fingerprint, train_config={"seed": s}) for s in (0, 1)]
    out = save_ensemble(tmp_path / "ens", list(prompts), metas, "vote")
    found = load_ensemble(out, tiny_causal.fingerprint)
    assert torch.equal(found.prompts, prompts) and found.method == "vote" and len(found.metas) == 2
    assert torch.equal(load_prompt(out)[0], prompts[0])  # single-prompt readers see member 0
    assert load_ensemble(out / "members" / "0") is None
    (out / "members" / "1" / "prompt.safetensors").write_bytes(b"broken")
    with pytest.raises(ArtifactError, match="members/1"):
        load_ensemble(out)


def _ensemble_args(base):
    metas = [PromptMeta("toy", base.spec, base.fingerprint, train_config={"seed": s}) for s in (0, 1)]
    return list(_prompts(base, k=2)), metas


@pytest.mark.parametrize("beside", [None, "ensemble.json", "prompt.json"])
def test_save_ensemble_keeps_a_folder_with_notes(tiny_causal, tmp_path, beside):
    target = tmp_path / "ens"
    target.mkdir()
    (target / "notes.txt").write_bytes(b"mine")
    if beside is not None:
        (target / beside).write_bytes(b"{}")
    with pytest.raises(ArtifactError) as caught:
        save_ensemble(target, *_ensemble_args(tiny_causal))
    assert str(caught.value) == (f"refusing to replace {target}: notes.txt is not part of a prompt artifact; "
                                 "move it away or choose another output directory")
    expected = {"notes.txt": b"mine", **({beside: b"{}"} if beside else {})}
    assert {p.name: p.read_bytes() for p in target.iterdir()} == expected


def test_save_ensemble_replaces_an_ensemble_or_a_prompt_keeping_the_mode(tiny_causal, tmp_path):
    prompts, metas = _ensemble_args(tiny_causal)
    out = save_ensemble(tmp_path / "ens", prompts, metas)
    out.chmod(0o750)
    save_ensemble(out, prompts[::-1], metas, "vote")  # its own files (members/ included): replaced
    assert load_ensemble(out).method == "vote" and stat.S_IMODE(out.stat().st_mode) == 0o750
    (out / "members" / "0" / "notes.txt").write_bytes(b"mine")  # nested: still found and named
    with pytest.raises(ArtifactError, match=r"members/0/notes\.txt is not part of a prompt artifact"):
        save_ensemble(out, prompts, metas)
    assert (out / "members" / "0" / "notes.txt").read_bytes() == b"mine"
    single = save_prompt(tmp_path / "single", prompts[0], metas[0])
    assert load_ensemble(save_ensemble(single, prompts, metas)) is not None  # a prompt dir may become an ensemble
    assert load_ensemble(save_prompt(single, prompts[0], metas[0])) is None  # and back
