"""The cached shared prefix (ptune.model.prefix) gives the plain path's results: rank scores within 1e-5
and the same greedy tokens, with left padding, for a soft prompt and for a hard-text prefix; it is
computed once per evaluate call; and it stays off wherever it could not be exact."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from ptune.evaluation import scoring as ev
from ptune.evaluation.baseline import few_shot_prefix, run_baselines
from ptune.evaluation.scoring import evaluate, join_prefix, score_labels, score_labels_naive
from ptune.model.base import from_objects
from ptune.model.batching import encode_source
from ptune.model.generate import generate_ids
from ptune.model.prefix import build_prefix, shared_len, split_shared
from tests.ptune.evaluation.eval_helpers import make_examples, make_spec

TEXTS = ["the film was good", "bad", "a witty plot with a gorgeous actor and a sad story that was fun",
         "no", "the news said the team won the game this year"]  # different lengths: left padding
LABELS = ["positive", "negative", "maybe neutral", "no"]
HARD = "Say if the review is positive or negative.\n\nthe film was fun positive\n\nbad plot negative"


def _rows(base, prefix_text: str = "", max_tokens: int = 256):
    return [encode_source(base.tokenizer, join_prefix(prefix_text, t), max_tokens, False) for t in TEXTS]


def _prompt(base, n: int = 4):
    return torch.randn(n, base.hidden_size, generator=torch.Generator().manual_seed(0))


def _case(base, kind: str):
    """(prompt or None, full rows, cached prefix, rows without the shared ids) for a soft/hard/both prefix."""
    prompt = _prompt(base) if "soft" in kind else None
    rows = _rows(base, HARD if "hard" in kind else "")
    prefix, rest = split_shared(base, prompt, rows)
    return prompt, rows, prefix, rest


@pytest.mark.parametrize("model", ["tiny_causal", "tiny_causal_nobos"])  # [BOS][prompt][text] and [prompt][text]
@pytest.mark.parametrize("kind", ["soft", "hard", "soft+hard"])
def test_cached_rank_scores_equal_the_plain_path(model, kind, request):
    tiny_causal = request.getfixturevalue(model)
    with torch.inference_mode():
        prompt, rows, prefix, rest = _case(tiny_causal, kind)
        cached = score_labels(tiny_causal, rest, LABELS, prefix=prefix)
        plain = score_labels(tiny_causal, rows, LABELS, prompt)
        naive = score_labels_naive(tiny_causal, rows, LABELS, prompt)
    n_shared = shared_len(rows)
    assert prefix is not None and prefix.n_ids == n_shared and prefix.length == n_shared + (4 if prompt is not None else 0)
    if "hard" in kind:
        assert n_shared > 20  # the instruction and demonstrations are shared, not just BOS
    assert len({len(r) for r in rest}) > 1  # rows still need left padding after the prefix
    # fp32 sums of up to ~50 nats: kernels that accumulate in another order (an AVX2-only CPU) differ by ~1e-5
    assert torch.allclose(cached, plain, atol=1e-5, rtol=1e-6), (cached - plain).abs().max()
    assert torch.allclose(cached, naive, atol=1e-5, rtol=1e-6), (cached - naive).abs().max()


@pytest.mark.parametrize("model", ["tiny_causal", "tiny_causal_nobos"])  # [BOS][prompt][text] and [prompt][text]
@pytest.mark.parametrize("kind", ["soft", "hard", "soft+hard"])
def test_cached_greedy_generation_equals_the_plain_path(model, kind, request):
    tiny_causal = request.getfixturevalue(model)
    with torch.inference_mode():
        prompt, rows, prefix, rest = _case(tiny_causal, kind)
        cached = generate_ids(tiny_causal, rest, None, max_new_tokens=6, prefix=prefix)
        plain = generate_ids(tiny_causal, rows, prompt, max_new_tokens=6)
        alone = [generate_ids(tiny_causal, [r], prompt, max_new_tokens=6)[0] for r in rows]
    assert cached == plain == alone
    assert any(cached) and len({tuple(r) for r in cached}) > 1


@pytest.mark.parametrize("mode", ["rank", "generate"])
def test_evaluate_with_a_k_shot_prefix_matches_the_plain_path(tiny_causal, monkeypatch, mode):
    spec, examples = make_spec(max_source_tokens=256), make_examples()
    prefix, k_used = few_shot_prefix(tiny_causal, spec, examples[:4], examples[4:], k=2)
    assert k_used == 2
    for prompt in (None, _prompt(tiny_causal, 3)):
        cached = evaluate(tiny_causal, spec, examples[4:], prompt, prefix=prefix, mode=mode, batch_size=2,
                          progress=False)
        monkeypatch.setattr(ev, "SHARE_PREFIX", False)
        plain = evaluate(tiny_causal, spec, examples[4:], prompt, prefix=prefix, mode=mode, batch_size=2,
                         progress=False)
        monkeypatch.setattr(ev, "SHARE_PREFIX", True)
        assert cached.predictions == plain.predictions and cached.metrics == plain.metrics


@pytest.mark.parametrize("mode", ["rank", "generate"])
def test_all_baselines_match_the_plain_path(tiny_causal, monkeypatch, mode):
    tiny_causal.tokenizer.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n"
                                           "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
    spec, examples = make_spec(), make_examples()
    kw = dict(k=3, batch_size=3, mode=mode, progress=False)
    cached = run_baselines(tiny_causal, spec, examples * 2, examples, **kw)
    monkeypatch.setattr(ev, "SHARE_PREFIX", False)
    plain = run_baselines(tiny_causal, spec, examples * 2, examples, **kw)
    assert set(cached) == set(plain) == {"zero_shot", "k_shot", "chat_zero_shot"}
    for name in cached:
        assert cached[name].predictions == plain[name].predictions, name
    assert cached["k_shot"].details["k_used"] == 3


def _count_batch_one_forwards(base) -> list[int]:
    """Batch sizes of every decoder forward (the LM's own calls, generate's steps and the prefix pass)."""
    sizes: list[int] = []

    def hook(module, args, kwargs):
        x = kwargs.get("inputs_embeds") if kwargs.get("inputs_embeds") is not None else kwargs.get("input_ids")
        sizes.append(int(x.shape[0]))

    base.model.base_model.register_forward_pre_hook(hook, with_kwargs=True)
    return sizes


@pytest.mark.parametrize("mode", ["rank", "generate"])
def test_prefix_is_computed_once_per_evaluate_call(tiny_causal, monkeypatch, mode):
    spec, examples = make_spec(), make_examples()  # 7 examples, batch_size 4: batches of 4 and 3
    sizes = _count_batch_one_forwards(tiny_causal)
    evaluate(tiny_causal, spec, examples, _prompt(tiny_causal, 3), prefix=spec.instruction, mode=mode,
             batch_size=4, progress=False)
    assert sizes.count(1) == 1 and len(sizes) > 3  # one prefix pass, then only batched passes
    sizes.clear()
    monkeypatch.setattr(ev, "SHARE_PREFIX", False)
    evaluate(tiny_causal, spec, examples, _prompt(tiny_causal, 3), prefix=spec.instruction, mode=mode,
             batch_size=4, progress=False)
    assert sizes.count(1) == 0


def test_shared_ids_are_the_common_leading_ids_and_leave_each_row_one():
    assert shared_len([[1, 5, 6, 7], [1, 5, 6, 8, 9]]) == 3
    assert shared_len([[1, 5, 6], [1, 5, 6, 8]]) == 2  # the shorter row keeps its last id
    assert shared_len([[1, 5], [2, 5]]) == 0 and shared_len([]) == 0 and shared_len([[1], []]) == 0
    assert shared_len([[1, 2, 3]]) == 2


def test_rows_truncated_at_their_start_share_nothing(tiny_causal):
    rows = _rows(tiny_causal, HARD, max_tokens=40)  # causal truncation keeps the end: BOS and prefix cut
    assert shared_len(rows) == 0
    with torch.inference_mode():
        assert split_shared(tiny_causal, None, rows) == (None, rows)
        prefix, rest = split_shared(tiny_causal, _prompt(tiny_causal), rows)  # the soft prompt is still shared
    assert prefix.length == 1 + 4 and prefix.leads and prefix.n_ids == 0 and rest == rows  # [BOS][prompt]


def test_plain_path_for_t5_and_per_row_prompts(tiny_causal, tiny_t5):
    with torch.inference_mode():
        assert build_prefix(tiny_t5, _prompt(tiny_t5), [5, 6]) is None
        assert build_prefix(tiny_causal, torch.zeros(2, 4, tiny_causal.hidden_size), [5, 6]) is None
        assert build_prefix(tiny_causal, None, []) is None


def test_sliding_window_models_keep_the_plain_path_without_a_prefix_pass(tiny_causal):
    """A sliding window counts padding positions, so moving the padding behind the prefix is not exact."""
    config = MistralConfig(vocab_size=len(tiny_causal.tokenizer), hidden_size=16, intermediate_size=32,
                           num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, sliding_window=4)
    base = from_objects(MistralForCausalLM(config), tiny_causal.tokenizer, "tiny-mistral")
    sizes = _count_batch_one_forwards(base)
    rows = _rows(base, HARD)
    with torch.inference_mode():
        assert split_shared(base, _prompt(base), rows) == (None, rows)
    assert sizes == []


def test_a_prefix_cache_and_a_prompt_cannot_be_combined(tiny_causal):
    rows = _rows(tiny_causal)
    with torch.inference_mode():
        prefix, rest = split_shared(tiny_causal, None, rows)
        with pytest.raises(ValueError, match="prefix cache"):
            score_labels(tiny_causal, rest, LABELS, _prompt(tiny_causal), prefix=prefix)
        with pytest.raises(ValueError, match="greedy"):
            generate_ids(tiny_causal, rest, None, 3, num_beams=2, prefix=prefix)
