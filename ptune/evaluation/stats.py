"""Honest comparisons: paired bootstrap intervals of a metric difference, and degenerate-output detection.

Paired bootstrap (Efron & Tibshirani 1993; Koehn 2004 for NLP): two approaches scored on the SAME examples
are resampled together, n examples drawn with replacement `n_resamples` times, and the difference of the
metric is recomputed on each resample. The 95% interval is the 2.5th..97.5th percentile of those
differences (`scipy.stats.bootstrap`, method "percentile", seeded). Identical predictions give [0, 0].
Metrics that are a mean over examples (accuracy, ROUGE, ...) resample a vector of per-example score
differences; the others (macro-F1, MCC, ...) are recomputed on each resample of example indices.

Degenerate: an approach whose most frequent prediction covers at least `threshold` of the rows (default
0.95) answers one class for (nearly) every input; it is flagged in the report and never promoted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptune.evaluation.metrics import Reference, get_metric, per_example_scores

N_RESAMPLES = 1000  # default resamples (`evaluate.bootstrap_resamples`)
LEVEL = 0.95
DEGENERATE_SHARE = 0.95


@dataclass(frozen=True)
class Interval:
    """Paired difference a - b of one metric on n shared examples, with its bootstrap interval."""

    metric: str  # e.g. "test/accuracy"
    diff: float  # metric(a) - metric(b) on all n examples
    low: float
    high: float
    n: int
    a: float  # metric(a)
    b: float  # metric(b)
    level: float = LEVEL
    n_resamples: int = N_RESAMPLES

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def text(self, digits: int = 4) -> str:
        """"+0.0450 [95% CI +0.0125, +0.0775], n=400"."""
        pct = f"{100 * self.level:g}%"
        return f"{self.diff:+.{digits}f} [{pct} CI {self.low:+.{digits}f}, {self.high:+.{digits}f}], n={self.n}"


def paired_bootstrap(metric: str, a: Sequence[str], b: Sequence[str], references: Sequence[Reference], *,
                     n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL,
                     **meta: Any) -> Interval:
    """Interval of metric(a) - metric(b), `metric` = "<split>/<name>" or "<name>"; a, b: predictions on the
    same examples in the same order; meta as for `ptune.evaluation.metrics` (label_words, group_ids...)."""
    from scipy.stats import bootstrap

    name = metric.split("/", 1)[-1]
    fn = get_metric(name)
    n = len(references)
    if len(a) != n or len(b) != n:
        raise ValueError(f"paired bootstrap of {metric}: {len(a)} and {len(b)} predictions for {n} references")
    score_a, score_b = float(fn(a, references, **meta)), float(fn(b, references, **meta))
    diff = score_a - score_b
    if n < 2 or list(a) == list(b):
        low = high = diff  # nothing to resample (identical predictions: exactly [0, 0])
    else:
        low, high = _bounds(name, fn, a, b, references, meta, n_resamples, seed, level, bootstrap)
    return Interval(metric, diff, low, high, n, score_a, score_b, level, n_resamples)


def score_interval(metric: str, predictions: Sequence[str], references: Sequence[Reference], *,
                   n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL, **meta: Any) -> Interval:
    """Bootstrap interval of one approach's own score (diff = a = the score, b = 0): the chart's error bars."""
    from scipy.stats import bootstrap

    name = metric.split("/", 1)[-1]
    fn = get_metric(name)
    score = float(fn(predictions, references, **meta))
    if len(references) < 2:
        return Interval(metric, score, score, score, len(references), score, 0.0, level, n_resamples)
    low, high = _bounds(name, fn, predictions, None, references, meta, n_resamples, seed, level, bootstrap)
    return Interval(metric, score, low, high, len(references), score, 0.0, level, n_resamples)


def _bounds(name: str, fn: Any, a: Sequence[str], b: Sequence[str] | None, references: Sequence[Reference],
            meta: Mapping[str, Any], n_resamples: int, seed: int, level: float, bootstrap: Any) -> tuple[float, float]:
    """Percentile bounds of metric(a) - metric(b) (b None: of metric(a)) over paired resamples."""
    rng = np.random.default_rng(seed)
    per_a = per_example_scores(name, a, references, **meta)
    per_b = per_example_scores(name, b, references, **meta) if b is not None else [0.0] * len(references)
    if per_a is not None and per_b is not None:
        data: tuple = (np.asarray(per_a) - np.asarray(per_b),)  # (n,)
        stat, vectorized = (lambda d, axis=-1: np.mean(d, axis=axis)), True
    else:
        data = (np.arange(len(references)),)
        stat, vectorized = (lambda idx: _metric_diff(fn, a, b, references, meta, idx)), False
    if np.ptp(data[0]) == 0 and vectorized:
        return float(data[0][0]), float(data[0][0])  # every resample gives the same value
    res = bootstrap(data, stat, n_resamples=n_resamples, confidence_level=level, method="percentile",
                    vectorized=vectorized, random_state=rng)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (low if math.isfinite(low) else 0.0), (high if math.isfinite(high) else 0.0)


def _metric_diff(fn: Any, a: Sequence[str], b: Sequence[str] | None, references: Sequence[Reference],
                 meta: Mapping[str, Any], idx: np.ndarray) -> float:
    pick = [int(i) for i in idx]
    sub = {k: [v[i] for i in pick] if k in ("group_ids", "answers") else v for k, v in meta.items()}
    refs = [references[i] for i in pick]
    other = 0.0 if b is None else float(fn([b[i] for i in pick], refs, **sub))
    return float(fn([a[i] for i in pick], refs, **sub)) - other


def majority_share(predictions: Sequence[str]) -> float:
    """Share of rows that get the most frequent prediction (1.0 = one answer for every row)."""
    if not predictions:
        return 0.0
    return Counter(p.strip() for p in predictions).most_common(1)[0][1] / len(predictions)


def is_degenerate(predictions: Sequence[str], threshold: float = DEGENERATE_SHARE) -> bool:
    """True when one prediction covers at least `threshold` of the rows (see the module docstring)."""
    return bool(predictions) and majority_share(predictions) >= threshold
