"""Paired bootstrap intervals (known answers) and degenerate-output detection."""

from __future__ import annotations

import random

import pytest

from ptune.evaluation.metrics import METRICS, per_example_scores
from ptune.evaluation.stats import is_degenerate, majority_share, paired_bootstrap


def _pairs(n: int = 300, acc_a: float = 0.8, acc_b: float = 0.6, seed: int = 0):
    rng = random.Random(seed)
    refs = [rng.choice("xy") for _ in range(n)]
    flip = {"x": "y", "y": "x"}
    a = [r if rng.random() < acc_a else flip[r] for r in refs]
    b = [r if rng.random() < acc_b else flip[r] for r in refs]
    return a, b, refs


def test_identical_predictions_give_exactly_zero():
    a, _, refs = _pairs()
    ci = paired_bootstrap("test/accuracy", a, list(a), refs)
    assert (ci.diff, ci.low, ci.high, ci.n) == (0.0, 0.0, 0.0, len(refs)) and not ci.excludes_zero


def test_clear_difference_excludes_zero_and_is_seeded():
    a, b, refs = _pairs()
    ci = paired_bootstrap("test/accuracy", a, b, refs, seed=3)
    assert ci.low <= ci.diff <= ci.high and ci.low > 0 and ci.excludes_zero
    assert ci == paired_bootstrap("test/accuracy", a, b, refs, seed=3)
    assert ci.diff == pytest.approx(ci.a - ci.b) and "95% CI" in ci.text()


def test_noise_does_not_exclude_zero():
    a, b, refs = _pairs(n=40, acc_a=0.7, acc_b=0.7, seed=1)
    ci = paired_bootstrap("test/accuracy", a, b, refs)
    assert ci.low < 0 < ci.high


def test_non_decomposable_metric_is_recomputed_per_resample():
    a, b, refs = _pairs(n=120)
    ci = paired_bootstrap("test/f1_macro", a, b, refs, label_words=("x", "y"), n_resamples=300)
    assert per_example_scores("f1_macro", a, refs) is None
    assert ci.low < ci.diff < ci.high and ci.diff == pytest.approx(
        METRICS["f1_macro"](a, refs, label_words=("x", "y")) - METRICS["f1_macro"](b, refs, label_words=("x", "y")))


@pytest.mark.parametrize("name", ["accuracy", "exact_match", "rougeL", "rouge1", "f1", "em"])
def test_per_example_scores_average_to_the_metric(name):
    preds, refs = ["the cat sat", "a dog", "x"], ["the cat sat down", "A dog", "y"]
    scores = per_example_scores(name, preds, refs)
    assert scores is not None and sum(scores) / len(scores) == pytest.approx(METRICS[name](preds, refs))


def test_degenerate_means_one_answer_for_nearly_every_row():
    assert majority_share(["a"] * 19 + ["b"]) == 0.95 and is_degenerate(["a"] * 19 + ["b"])
    assert not is_degenerate(["a"] * 18 + ["b"] * 2) and not is_degenerate([])
