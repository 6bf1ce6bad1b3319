"""MultiPromptModel: a mixed-task batch (per-row prompts of different lengths, rows of very different
lengths) gives what each task gives on its own, and a prompt made for another base model is refused."""

from __future__ import annotations

import pytest
import torch

from ptune.data.catalog import get_task
from ptune.data.spec import format_input
from ptune.errors import ArtifactError, DataError
from ptune.evaluation.scoring import predict, score_labels
from ptune.model import artifacts
from ptune.model.artifacts import PromptMeta
from ptune.model.batching import encode_source
from ptune.serving.multi_prompt import MultiPromptModel, Row
from tests.ptune.serving.helpers import SCORE_TOL

# task -> prompt length: different P in one batch; 2, 3 and 7 labels; one generation task
TASKS = {"rotten_tomatoes": 3, "vitaminc": 7, "intent": 1, "xsum": 5}
TEXTS = ["good", "the film was a witty gorgeous story and the actor was great " * 6, "sad dull plot",
         "news: the city team won the game said people this year " * 3]


def save(path, base, task: str, n_tokens: int, seed: int, fingerprint: str | None = None):
    weight = torch.randn(n_tokens, base.hidden_size, generator=torch.Generator().manual_seed(seed)) * 0.5
    meta = PromptMeta(task=task, base_spec=base.spec, base_fingerprint=fingerprint or base.fingerprint)
    return artifacts.save_prompt(path / f"{task}-{seed}", weight, meta)


def loaded(tmp_path, base, cache_prefix: bool = True) -> MultiPromptModel:
    model = MultiPromptModel(base, cache_prefix=cache_prefix)
    for seed, (task, n) in enumerate(TASKS.items()):
        model.load(get_task(task), save(tmp_path, base, task, n, seed), version=str(seed + 1))
    return model


def alone(model: MultiPromptModel, task: str, text: str):
    """The task run on its own through the evaluation code path: (label scores or None, prediction)."""
    loaded_task, spec, base = model.snapshot()[task], get_task(task), model.base
    source = format_input(spec, text)
    if spec.kind == "generation":
        return None, predict(base, spec, [source], loaded_task.prompt, mode="generate")[0][0]
    ids = [encode_source(base.tokenizer, source, spec.max_source_tokens, base.is_encoder_decoder)]
    scores = score_labels(base, ids, spec.label_words, loaded_task.prompt)[0]
    return scores, spec.label_words[int(scores.argmax())]


@pytest.mark.parametrize("cache_prefix", [True, False], ids=["cached-prefix", "plain"])
def test_mixed_batch_equals_each_task_alone(tmp_path, tiny_base, cache_prefix):
    model = loaded(tmp_path, tiny_base, cache_prefix)
    rows = [Row(task, text) for i, text in enumerate(TEXTS) for j, task in enumerate(TASKS) if (i + j) % 2 == 0]
    rows += [Row("rotten_tomatoes", TEXTS[1]), Row("intent", TEXTS[0]), Row("xsum", TEXTS[2])]
    preds = model.predict(rows, batch_size=len(rows))
    assert [p.task for p in preds] == [r.task for r in rows]
    for row, pred in zip(rows, preds, strict=True):
        scores, label = alone(model, row.task, row.text)
        assert pred.label == label, row
        assert pred.version == str(list(TASKS).index(row.task) + 1)
        if scores is not None:
            assert list(pred.scores) == list(get_task(row.task).label_words)
            torch.testing.assert_close(torch.tensor(list(pred.scores.values())), scores.float(), **SCORE_TOL)


def test_prefix_is_cached_at_load_for_causal_models(tmp_path, tiny_causal):
    model = loaded(tmp_path, tiny_causal)
    task = model.snapshot()["vitaminc"]
    assert task.prefix is not None and task.prefix.length == 1 + TASKS["vitaminc"]  # [BOS][prompt]: tokenizer adds BOS
    assert task.prefix.leads


def test_batch_size_does_not_change_results(tmp_path, tiny_causal):
    model = loaded(tmp_path, tiny_causal)
    rows = [Row(task, text) for text in TEXTS for task in ("rotten_tomatoes", "intent", "vitaminc")]
    big, small = model.predict(rows, batch_size=64), model.predict(rows, batch_size=2)
    for a, b in zip(big, small, strict=True):
        assert a.label == b.label
        torch.testing.assert_close(torch.tensor(list(a.scores.values())), torch.tensor(list(b.scores.values())),
                                   **SCORE_TOL)


def test_fingerprint_mismatch_is_refused_at_load(tmp_path, tiny_causal):
    model = loaded(tmp_path, tiny_causal)
    bad = save(tmp_path, tiny_causal, "rotten_tomatoes", 3, seed=9, fingerprint="0" * 64)
    with pytest.raises(ArtifactError, match="fingerprint"):
        model.load(get_task("rotten_tomatoes"), bad, version="9")
    assert model.snapshot()["rotten_tomatoes"].version == "1"  # the served version stays


def test_swap_replaces_the_version_and_keeps_old_snapshots(tmp_path, tiny_causal):
    model = loaded(tmp_path, tiny_causal)
    before = model.snapshot()
    model.load(get_task("rotten_tomatoes"), save(tmp_path, tiny_causal, "rotten_tomatoes", 2, seed=7), version="8")
    assert before["rotten_tomatoes"].version == "1" and model.snapshot()["rotten_tomatoes"].version == "8"
    assert model.predict([Row("rotten_tomatoes", "good")])[0].version == "8"


def test_unknown_task_names_the_row_and_the_served_tasks(tmp_path, tiny_causal):
    model = loaded(tmp_path, tiny_causal)
    with pytest.raises(DataError, match=r"row 1: task 'nope'.*served tasks: \['intent'"):
        model.predict([Row("intent", "x"), Row("nope", "y")])


def _ensemble(tmp_path, base, task: str, method: str, k: int = 3, n_tokens: int = 4):
    from ptune.model.ensemble_artifact import save_ensemble

    gen = torch.Generator().manual_seed(11)
    prompts = [torch.randn(n_tokens, base.hidden_size, generator=gen) * 0.5 for _ in range(k)]
    metas = [PromptMeta(task=task, base_spec=base.spec, base_fingerprint=base.fingerprint,
                        train_config={"seed": i}) for i in range(k)]
    return save_ensemble(tmp_path / f"{task}-ensemble-{method}", prompts, metas, method), torch.stack(prompts)


@pytest.mark.parametrize("method", ["mean", "vote"])
def test_a_served_ensemble_answers_as_its_evaluation_scored_it_in_a_mixed_batch(tmp_path, tiny_causal, method):
    from ptune.evaluation.ensemble import combine, member_scores

    model = loaded(tmp_path, tiny_causal)
    directory, prompts = _ensemble(tmp_path, tiny_causal, "rotten_tomatoes", method)
    served = model.load(get_task("rotten_tomatoes"), directory, version="9")
    assert len(served.prompts) == 3 and served.method == method
    rows = [Row("rotten_tomatoes", t) for t in TEXTS] + [Row("intent", TEXTS[0]), Row("vitaminc", TEXTS[2])]
    preds = model.predict(rows, batch_size=5)  # members of one row may land in different batches
    spec = get_task("rotten_tomatoes")
    expected = member_scores(tiny_causal, spec, [format_input(spec, t) for t in TEXTS], prompts)  # (N, K, L)
    labels = combine(expected, method)
    for i, pred in enumerate(preds[:len(TEXTS)]):
        assert pred.version == "9" and pred.label == spec.label_words[int(labels[i])]
        torch.testing.assert_close(torch.tensor(list(pred.scores.values())), expected[i].mean(0), **SCORE_TOL)
    assert preds[-2].label == alone(model, "intent", TEXTS[0])[1]  # single-prompt tasks unchanged beside it
    assert preds[-1].label == alone(model, "vitaminc", TEXTS[2])[1]


def test_an_ensemble_of_a_generation_task_is_refused_and_the_served_version_stays(tmp_path, tiny_causal):
    model = loaded(tmp_path, tiny_causal)
    directory, _ = _ensemble(tmp_path, tiny_causal, "xsum", "mean")
    with pytest.raises(ArtifactError, match="ensemble of 3 prompts for generation task 'xsum'"):
        model.load(get_task("xsum"), directory, version="9")
    assert model.snapshot()["xsum"].version == "4"


def test_bf16_serving_holds_every_weight_in_bf16_and_scores_as_evaluation_does(tmp_path, tiny_causal,
                                                                                 tiny_causal_dir):
    from ptune.model.base import load_base_model
    from ptune.model.precision import inference_precision

    served = MultiPromptModel(load_base_model(str(tiny_causal_dir)), precision=torch.bfloat16)
    assert {p.dtype for p in served.base.model.parameters()} == {torch.bfloat16}  # held once, at construction
    assert served.base.fingerprint == tiny_causal.fingerprint  # the checkpoint's: fp32-trained prompts load
    reference = MultiPromptModel(tiny_causal)  # fp32 holder, run inside evaluation's bf16 context
    for seed, (task, n) in enumerate(TASKS.items()):
        path = save(tmp_path, tiny_causal, task, n, seed)
        served.load(get_task(task), path, version="1")
        with inference_precision(tiny_causal.model, tiny_causal.device, torch.bfloat16):
            reference.load(get_task(task), path, version="1")  # its prefix built as evaluation builds it
    rows = [Row(task, text) for text in TEXTS for task in TASKS]
    got = served.predict(rows, batch_size=8)
    with inference_precision(tiny_causal.model, tiny_causal.device, torch.bfloat16):
        want = reference.predict(rows, batch_size=8)
    assert {p.dtype for p in tiny_causal.model.parameters()} == {torch.float32}  # the context gave them back
    for a, b in zip(got, want, strict=True):
        assert (a.label, a.scores) == (b.label, b.scores)  # same computation, bit for bit
    fp32 = reference.predict(rows, batch_size=8)  # and not what fp32 computes
    assert any(a.scores != b.scores for a, b in zip(got, fp32, strict=True) if a.scores)
    for row, pred in zip(rows, got, strict=True):  # close to the task scored alone in fp32
        scores, _ = alone(reference, row.task, row.text)
        if scores is not None:
            torch.testing.assert_close(torch.tensor(list(pred.scores.values())), scores.float(), atol=0.1, rtol=0.02)
