"""Hard-prompt baselines: deterministic k-shot within the context window, chat template, same scoring."""

from __future__ import annotations

import pytest
import torch

from ptune.evaluation.baseline import (
    chat_examples,
    few_shot_prefix,
    prompt_window,
    run_baselines,
    trainable_params,
)
from ptune.evaluation.scoring import evaluate, join_prefix
from tests.ptune.evaluation.eval_helpers import make_examples, make_spec

CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def _train():
    return make_examples() * 3  # 21 demonstrations to draw from


def test_k_shot_prefix_is_deterministic_and_formatted(tiny_causal):
    spec, test = make_spec(max_source_tokens=256), make_examples(n=3)
    a = few_shot_prefix(tiny_causal, spec, _train(), test, k=3, seed=7)
    assert a == few_shot_prefix(tiny_causal, spec, _train(), test, k=3, seed=7)
    prefix, k_used = a
    assert k_used == 3
    blocks = prefix.split("\n\n")
    assert blocks[0] == spec.instruction and len(blocks) == 4
    assert all(any(b == f"{ex.source} {ex.target}" for ex in _train()) for b in blocks[1:])


@pytest.mark.parametrize("max_tokens", [40, 70, 100])
def test_k_shot_drops_demonstrations_until_every_test_input_fits(tiny_base, max_tokens):
    spec, test = make_spec(max_source_tokens=max_tokens), make_examples()
    prefix, k_used = few_shot_prefix(tiny_base, spec, _train(), test, k=6, seed=0)
    assert 0 <= k_used <= 6 and prefix.count("\n\n") == k_used
    lengths = [len(tiny_base.tokenizer(join_prefix(prefix, ex.source))["input_ids"]) for ex in test]
    assert k_used == 0 or max(lengths) <= max_tokens
    if k_used < 6:  # one more demonstration would not have fitted
        full, _ = few_shot_prefix(tiny_base, make_spec(max_source_tokens=10_000), _train(), test, k=6, seed=0)
        longer = "\n\n".join(full.split("\n\n")[:k_used + 2])
        assert max(len(tiny_base.tokenizer(join_prefix(longer, ex.source))["input_ids"]) for ex in test) > max_tokens


def test_run_baselines_without_chat_template(tiny_base):
    spec, test = make_spec(max_source_tokens=256), make_examples()
    results = run_baselines(tiny_base, spec, _train(), test, k=2, seed=1, batch_size=4, progress=False)
    assert list(results) == ["zero_shot", "k_shot"]
    assert "chat template" in results.notes["chat_zero_shot"]
    assert results["k_shot"].details["k_used"] == 2 and results["k_shot"].details["seed"] == 1
    zero = evaluate(tiny_base, spec, test, prefix=spec.instruction, progress=False)
    assert results["zero_shot"].predictions == zero.predictions
    assert results["zero_shot"].metrics == zero.metrics
    assert all(r.n == len(test) and r.details["mode"] == "rank" for r in results.values())


def test_chat_zero_shot_scores_the_label_after_the_assistant_cue(tiny_causal):
    tiny_causal.tokenizer.chat_template = CHAT_TEMPLATE
    spec, test = make_spec(), make_examples(n=4)
    chat = chat_examples(tiny_causal, spec, test)
    assert chat[0].source == f"user: {spec.instruction}\n\n{test[0].source}\nassistant:"  # BOS not doubled
    assert tiny_causal.tokenizer(chat[0].source)["input_ids"].count(tiny_causal.tokenizer.bos_token_id) == 1
    results = run_baselines(tiny_causal, spec, _train(), test, k=1, progress=False)
    assert list(results) == ["zero_shot", "k_shot", "chat_zero_shot"] and not results.notes.get("chat_zero_shot")
    assert results["chat_zero_shot"].predictions == evaluate(tiny_causal, spec, chat, progress=False).predictions


def test_baselines_use_the_requested_mode(tiny_causal):
    results = run_baselines(tiny_causal, make_spec(), _train(), make_examples(n=3), k=1, mode="generate",
                            progress=False)
    assert all(r.details["mode"] == "generate" for r in results.values())
    assert all(0.0 <= r.invalid_rate <= 1.0 for r in results.values())


def test_trainable_parameters():
    assert trainable_params(None) == 0
    assert trainable_params(torch.zeros(20, 576)) == 20 * 576


def test_hard_prompts_get_room_for_k_demonstrations(tiny_causal):
    """A tight source budget must not starve the k-shot baseline: its window is (k+2) x the budget."""
    test = make_examples()[:4]
    longest = max(len(tiny_causal.tokenizer(join_prefix("Classify.", ex.source))["input_ids"]) for ex in test)
    spec = make_spec(max_source_tokens=longest + 2, instruction="Classify.")
    assert few_shot_prefix(tiny_causal, spec, _train(), test, 2)[1] == 0  # no room inside the task budget
    assert prompt_window(tiny_causal, spec, k=2) == 4 * (longest + 2)
    results = run_baselines(tiny_causal, spec, _train(), test, k=2, progress=False)
    assert results["k_shot"].details["k_used"] == 2
