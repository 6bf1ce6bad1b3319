"""Rank classification equals brute force; generation is padding-independent; evaluate() contract."""

from __future__ import annotations

import pytest
import torch

from ptune.errors import ConfigError, DataError
from ptune.evaluation import scoring as ev
from ptune.evaluation.scoring import evaluate, join_prefix, score_labels, score_labels_naive
from ptune.model.batching import encode_source
from ptune.model.generate import cut_at_stop, generate_batch, generate_ids, match_label
from ptune.model.soft_prompt import prompt_inputs
from tests.ptune.evaluation.eval_helpers import make_examples, make_spec

TEXTS = ["the film was good", "bad", "a witty plot with a gorgeous actor and a sad story that was fun",
         "no", "the news said the team won the game this year"]
LABELS = ["positive", "negative", "maybe neutral", "no"]  # mixed token lengths


def _sources(base, texts=TEXTS):
    return [encode_source(base.tokenizer, t, 64, base.is_encoder_decoder) for t in texts]


ONE_TOKEN_LABELS = ["a", "b", "n", "y"]  # one token each in the tiny tokenizer: the causal shortcut, no label pass


@pytest.mark.parametrize("labels", [LABELS, ONE_TOKEN_LABELS], ids=["mixed", "one_token"])
@pytest.mark.parametrize("prompt_kind", ["none", "shared", "per_row"])
def test_shared_source_scoring_equals_full_forward_per_label(tiny_base, prompt_kind, labels):
    torch.manual_seed(0)
    srcs = _sources(tiny_base)
    prompt = {"none": None, "shared": torch.randn(4, tiny_base.hidden_size),
              "per_row": torch.randn(len(srcs), 4, tiny_base.hidden_size)}[prompt_kind]
    lengths = {len(ids) for ids in ev.label_target_ids(tiny_base, labels)}
    assert (lengths == {1}) == (labels is ONE_TOKEN_LABELS) or tiny_base.is_encoder_decoder, lengths
    with torch.inference_mode():
        fast = score_labels(tiny_base, srcs, labels, prompt)
        slow = score_labels_naive(tiny_base, srcs, labels, prompt)
    assert fast.shape == (len(TEXTS), len(labels))
    assert torch.allclose(fast, slow, atol=1e-5, rtol=0), (fast - slow).abs().max()
    assert torch.isfinite(fast).all() and (fast < 0).all()


def test_scores_do_not_depend_on_batch_neighbours(tiny_base):
    srcs = _sources(tiny_base)
    with torch.inference_mode():
        batched = score_labels(tiny_base, srcs, LABELS)
        alone = torch.cat([score_labels(tiny_base, [s], LABELS) for s in srcs])
    assert torch.allclose(batched, alone, atol=1e-5, rtol=0)


def test_length_normalised_scores_divide_by_label_tokens(tiny_causal):
    srcs = _sources(tiny_causal)[:2]
    with torch.inference_mode():
        total = score_labels(tiny_causal, srcs, LABELS)
        mean = score_labels(tiny_causal, srcs, LABELS, length_normalize=True)
    lengths = torch.tensor([len(tiny_causal.tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in LABELS])
    assert torch.allclose(mean, total / lengths, atol=1e-6)


def test_rank_evaluate_predicts_argmax_and_reports_metrics(tiny_base):
    spec, examples = make_spec(), make_examples()
    prompt = torch.randn(3, tiny_base.hidden_size)
    result = evaluate(tiny_base, spec, examples, prompt, batch_size=3, progress=False)
    srcs = [encode_source(tiny_base.tokenizer, ex.source, spec.max_source_tokens, tiny_base.is_encoder_decoder)
            for ex in examples]
    with torch.inference_mode():
        expected = [spec.label_words[i] for i in score_labels_naive(tiny_base, srcs, spec.label_words, prompt).argmax(-1)]
    assert result.predictions == expected
    assert list(result.metrics) == ["test/accuracy", "test/f1_macro"]
    acc = sum(p == ex.target for p, ex in zip(expected, examples, strict=True)) / len(examples)
    assert result.metrics["test/accuracy"] == pytest.approx(acc)
    assert result.n == len(examples) and result.invalid_rate == 0.0 and result.seconds > 0


def test_prefix_is_joined_before_the_source(tiny_causal):
    spec, examples = make_spec(), make_examples()
    with_prefix = evaluate(tiny_causal, spec, examples, prefix="Classify.", progress=False)
    moved = [type(ex)(id=ex.id, source=join_prefix("Classify.", ex.source), target=ex.target, fields=ex.fields)
             for ex in examples]
    assert with_prefix.predictions == evaluate(tiny_causal, spec, moved, progress=False).predictions
    assert join_prefix("", "x") == "x" and join_prefix("Do it. ", "x") == "Do it.\n\nx"


def _greedy_no_cache(base, ids: list[int], prompt, steps: int) -> list[int]:
    """Reference decoding: a full forward (no cache) per new token, one row, no padding."""
    new: list[int] = []
    for _ in range(steps):
        if base.is_encoder_decoder:
            src = torch.tensor([ids])
            kw = prompt_inputs(base, prompt, src, torch.ones_like(src))
            dec = torch.tensor([[base.model.config.decoder_start_token_id] + new])
            logits = base.model(**kw, decoder_input_ids=dec).logits
        else:
            seq = torch.tensor([ids + new])
            logits = base.model(**prompt_inputs(base, prompt, seq, torch.ones_like(seq))).logits
        nxt = int(logits[0, -1].argmax())
        if nxt == base.tokenizer.eos_token_id:
            break
        new.append(nxt)
    return new


@pytest.mark.parametrize("with_prompt", [False, True])
def test_generation_batched_equals_single_and_no_cache_reference(tiny_base, with_prompt):
    torch.manual_seed(1)
    prompt = torch.randn(4, tiny_base.hidden_size) if with_prompt else None
    srcs = _sources(tiny_base)
    with torch.inference_mode():
        batched = generate_ids(tiny_base, srcs, prompt, max_new_tokens=6)
        single = [generate_ids(tiny_base, [s], prompt, max_new_tokens=6)[0] for s in srcs]
        reference = [_greedy_no_cache(tiny_base, s, prompt, 6) for s in srcs]
    assert batched == single
    # equal to the no-cache reference => only the new tokens come back (the source is not echoed)
    assert batched == reference
    assert any(batched) and len({tuple(r) for r in batched}) > 1


def test_beam_search_runs_with_a_prompt(tiny_base):
    with torch.inference_mode():
        out = generate_batch(tiny_base, _sources(tiny_base)[:2], torch.randn(2, tiny_base.hidden_size), 4, num_beams=3)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_cut_at_stop_rules():
    assert cut_at_stop("\n\n  A summary.\nArticle: more", ("\n",)) == "A summary."  # leading newlines never stop
    assert cut_at_stop("one. two|three", ("|", ". ")) == "one"  # the first of several, itself cut
    assert cut_at_stop(" no stop here ", ("\n",)) == "no stop here"
    assert cut_at_stop(" kept\nwhole ", ()) == "kept\nwhole"


def test_stop_strings_end_decoding_and_cut_the_text(tiny_causal):
    """A row stops decoding at its stop string (fewer ids), its text is the unstopped text cut there, and a
    row without the stop string decodes as before."""
    tiny_base = tiny_causal
    srcs, tok = _sources(tiny_base), tiny_base.tokenizer
    prompt = torch.randn(4, tiny_base.hidden_size, generator=torch.Generator().manual_seed(3)) * 4
    with torch.inference_mode():
        full = generate_ids(tiny_base, srcs, prompt, max_new_tokens=12)
    texts = [tok.decode(ids, skip_special_tokens=True) for ids in full]
    # a stop string of three tokens (it spans tokens) from the first row with visible text
    row = next(i for i, t in enumerate(texts) if t.strip() and len(full[i]) > 4)
    stop = tok.decode(full[row][:3], skip_special_tokens=True).strip()
    with torch.inference_mode():
        stopped = generate_ids(tiny_base, srcs, prompt, max_new_tokens=12, stop_strings=(stop,))
        cut = generate_batch(tiny_base, srcs, prompt, 12, stop_strings=(stop,))
    assert cut == [cut_at_stop(t, (stop,)) for t in texts]
    hit = [i for i, t in enumerate(texts) if stop in t.lstrip()]
    assert row in hit and len(hit) < len(texts)
    for i, (a, b) in enumerate(zip(full, stopped, strict=True)):
        if i in hit:
            assert len(b) < len(a) and a[:len(b)] == b and stop in tok.decode(b, skip_special_tokens=True), i
        else:
            assert a == b, i


def test_leading_whitespace_never_stops_a_row(tiny_t5):
    """With this prompt the tiny T5 writes only tabs: a tab stop string must not end those rows (nothing
    was answered yet)."""
    srcs = _sources(tiny_t5)
    prompt = torch.randn(4, tiny_t5.hidden_size, generator=torch.Generator().manual_seed(0)) * 4
    with torch.inference_mode():
        full = generate_ids(tiny_t5, srcs, prompt, max_new_tokens=8)
        stopped = generate_ids(tiny_t5, srcs, prompt, max_new_tokens=8, stop_strings=("\t",))
    assert all(tiny_t5.tokenizer.decode(ids, skip_special_tokens=True).isspace() for ids in full)
    assert stopped == full and all(len(ids) == 8 for ids in full)


def test_match_label_rules():
    labels = ("yes", "no", "not entailed", "not")
    assert match_label("  Yes ", labels) == "yes"
    assert match_label("yes.\nQuestion: ...", labels) == "yes"
    assert match_label("yesterday", labels) is None
    assert match_label("not entailed, because", labels) == "not entailed"
    assert match_label("", labels) is None


def test_generated_classification_counts_invalid_outputs_wrong(tiny_causal, monkeypatch):
    spec, examples = make_spec(metrics=("accuracy",)), make_examples(n=4)  # targets: pos, neg, neg, pos
    fake = iter([["Positive.", "banana", "negative", "positively"]])
    monkeypatch.setattr(ev, "generate_batch", lambda *a, **k: next(fake))
    monkeypatch.setattr(ev, "_predict", _unsorted_predict(ev._predict))
    result = evaluate(tiny_causal, spec, examples, mode="generate", batch_size=8, progress=False)
    assert result.predictions == ["positive", "banana", "negative", "positively"]
    assert result.invalid_rate == pytest.approx(0.5)
    assert result.metrics["test/accuracy"] == pytest.approx(2 / 4)


def _unsorted_predict(original):
    """Keep the fake generator's outputs in input order: give every source the same length."""
    def run(base, spec, sources, *args):
        return original(base, spec, [[1]] * len(sources), *args)
    return run


def test_generation_task_reports_rouge(tiny_base):
    spec, examples = make_spec("generation"), make_examples("generation")
    result = evaluate(tiny_base, spec, examples, torch.randn(2, tiny_base.hidden_size), batch_size=2, progress=False)
    assert list(result.metrics) == ["test/rouge1", "test/rougeL"]
    assert result.details["mode"] == "generate" and result.n == 3 and result.invalid_rate == 0.0
    assert all(0 <= v <= 100 for v in result.metrics.values())


def test_max_examples_and_split_name(tiny_causal):
    result = evaluate(tiny_causal, make_spec(), make_examples(), split="validation", max_examples=2, progress=False)
    assert result.n == 2 and len(result.predictions) == 2 and "validation/accuracy" in result.metrics


def test_zero_examples_is_a_clear_data_error(tiny_causal):
    with pytest.raises(DataError, match="split 'validation'.*no examples"):
        evaluate(tiny_causal, make_spec(), [], split="validation")


def test_unknown_metric_and_impossible_mode_are_config_errors(tiny_causal):
    spec = make_spec()
    object.__setattr__(spec, "metrics", ("accuracy", "bleu"))  # past TaskSpec's own check: evaluate checks again
    with pytest.raises(ConfigError, match="unknown metric 'bleu'.*accuracy"):
        evaluate(tiny_causal, spec, make_examples(n=2), progress=False)
    with pytest.raises(ConfigError, match="mode 'rank'"):
        evaluate(tiny_causal, make_spec("generation"), make_examples("generation"), mode="rank")
