"""Contextual calibration: the content-free input is the task's own template, and a biased scorer is corrected."""

from __future__ import annotations

import pytest

from ptune.data.catalog import get_task
from ptune.data.splits import Example
from ptune.evaluation import baseline as baseline_module
from ptune.evaluation.analysis import select_best
from ptune.evaluation.baseline import run_baselines
from ptune.evaluation.calibration import CONTENT_FREE, calibrate, content_free_sources, input_columns
from ptune.evaluation.scoring import EvalResult
from tests.ptune.evaluation.eval_helpers import make_examples, make_spec


def _rotten(text: str, category: str) -> Example:
    spec = get_task("rotten_tomatoes")
    source, target = spec.formatter({"text": text, "category": category})
    return Example("r", source, target, {"text": text, "category": category})


def test_content_free_input_is_the_tasks_own_template():
    spec = get_task("rotten_tomatoes")
    assert input_columns(spec, {"text": "a fine film", "category": "fresh"}) == ["text"]  # label column left alone
    sources = content_free_sources(spec, [_rotten("a fine film", "fresh")])
    expected = [spec.formatter({"text": cf, "category": "fresh"})[0] for cf in CONTENT_FREE]
    assert sources == expected == ["Review: N/A\nSentiment:", "Review: \nSentiment:", "Review: [MASK]\nSentiment:"]


def test_calibration_corrects_a_biased_scorer():
    """Synthetic model: every row's label scores carry the same +3 bias toward "negative"; uncalibrated, it
    answers "negative" everywhere; the content-free inputs show the bias and calibration removes it."""
    spec = make_spec()
    targets = ["positive", "negative", "positive", "negative", "positive", "positive"]
    evidence = {"positive": [0.0, 1.0], "negative": [1.0, 0.0]}  # what the input says, (negative, positive)
    scores = [[e[0] + 3.0, e[1]] for e in (evidence[t] for t in targets)]  # biased toward label 0
    examples = [Example(str(i), f"Review: {t}\nSentiment:", t, {"text": t}) for i, t in enumerate(targets)]
    biased = EvalResult({"test/accuracy": 2 / 6, "test/f1_macro": 0.0}, ["negative"] * 6, 0.0, 6, 0.0,
                        {"mode": "rank"}, scores)
    fixed = calibrate(biased, spec, examples, cf_scores=[[3.0, 0.0], [3.5, 0.5], [2.5, -0.5]], split="test")
    assert fixed.predictions == targets and fixed.metrics["test/accuracy"] == 1.0
    assert fixed.details["calibrated"] and fixed.details["p_content_free"][0] > 0.9


def test_baselines_add_calibrated_rows_scored_on_the_template(tiny_causal, monkeypatch):
    scored: list[list[str]] = []
    real_predict = baseline_module.predict
    monkeypatch.setattr(baseline_module, "predict",
                        lambda base, spec, sources, **kw: scored.append(list(sources)) or real_predict(base, spec, sources, **kw))
    spec, test = make_spec(max_source_tokens=256), make_examples()
    results = run_baselines(tiny_causal, spec, make_examples() * 3, test, k=2, draws=3, calibrate=True,
                            majority=True, progress=False)
    assert {"zero_shot_calibrated", "k_shot_calibrated", "k_shot_2_calibrated", "k_shot_3_calibrated"} <= set(results)
    assert scored[0] == [f"{spec.instruction}\n\nReview: {cf}\nSentiment:" for cf in CONTENT_FREE]
    for name in ("zero_shot", "k_shot_3"):
        twin = results[f"{name}_calibrated"]
        assert twin.n == results[name].n and twin.details["calibrated"]
        assert set(twin.predictions) <= set(spec.label_words)


@pytest.mark.parametrize("draws", [1, 3])
def test_k_shot_draws_use_consecutive_seeds_and_a_majority_row(tiny_causal, draws):
    spec, test = make_spec(max_source_tokens=256), make_examples()
    train = make_examples() + make_examples()[:1]  # "positive" is the train majority (5 of 8)
    results = run_baselines(tiny_causal, spec, train * 3, test, k=2, seed=5, draws=draws, majority=True,
                            progress=False)
    names = ["k_shot", "k_shot_2", "k_shot_3"][:draws]
    assert [n for n in results if n.startswith("k_shot")] == names
    assert [results[n].details["seed"] for n in names] == list(range(5, 5 + draws))
    assert results["majority"].predictions == ["positive"] * len(test)
    assert results["majority"].metrics["test/accuracy"] == pytest.approx(4 / 7)


def test_select_picks_on_the_given_split_not_on_test():
    def res(acc: float) -> EvalResult:
        return EvalResult({"test/accuracy": acc}, [], 0.0, 1, 0.0)

    test = {"zero_shot": res(0.9), "k_shot": res(0.5), "tuned": res(0.95)}
    assert select_best(test, {"zero_shot": res(0.4), "k_shot": res(0.6)}) == ("k_shot", "validation")
    assert select_best(test, None) == ("zero_shot", "test")  # no validation results: said so in the report
