"""What the report says beyond the raw scores: which baseline is "best" (chosen on validation), every
approach's 95% interval, the paired interval of (tuned - best baseline), k-shot draws as mean and best,
and which approaches are degenerate. Built once from the `EvalResult`s; the markdown, JSON, chart, MLflow
and the promotion gate all read the same `Analysis`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ptune.data.spec import TaskSpec
from ptune.data.splits import Example
from ptune.evaluation.scoring import EvalResult, metric_meta
from ptune.evaluation.stats import (
    DEGENERATE_SHARE,
    N_RESAMPLES,
    Interval,
    majority_share,
    paired_bootstrap,
    score_interval,
)

TUNED = "tuned"


@dataclass(frozen=True)
class Analysis:
    metric: str  # primary "<split>/<metric>"
    selected: str | None  # the best baseline, chosen on the validation split (None: no baseline)
    selected_on: str  # "validation", or "test" when no validation results were given (then said in the report)
    validation: dict[str, float]  # primary validation metric per baseline row
    intervals: dict[str, Interval]  # each approach's own score, 95% bootstrap interval
    gain: Interval | None  # paired (tuned - selected baseline)
    shares: dict[str, float]  # share of rows given the most frequent answer, per approach
    threshold: float | None = DEGENERATE_SHARE  # None: no approach is flagged
    kshot: dict[str, float] = field(default_factory=dict)  # "mean", "std", "best" (draw chosen on validation)
    best_draw: str | None = None

    def degenerate(self, name: str) -> bool:
        return self.threshold is not None and self.shares.get(name, 0.0) >= self.threshold


def select_best(results: Mapping[str, EvalResult], validation: Mapping[str, EvalResult] | None) -> tuple[str | None, str]:
    """(best baseline row, split it was chosen on): the validation results when given, else the results' own
    split (legacy callers, or `ptune report --split validation`)."""
    names = [n for n in results if n != TUNED]
    own = next(iter(results.values())).metrics if results else {"test/": 0}
    on, where = (validation, "validation") if validation else (results, next(iter(own)).split("/", 1)[0])
    names = [n for n in names if n in on]
    if not names:
        return None, where
    key = next(iter(on[names[0]].metrics))
    return max(names, key=lambda n: on[n].metrics[key]), where


def analyse(spec: TaskSpec, examples: Sequence[Example], results: Mapping[str, EvalResult],
            validation: Mapping[str, EvalResult] | None = None, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
            threshold: float | None = DEGENERATE_SHARE) -> Analysis:
    """Intervals, selection and flags for `results` (all on `examples`, in order; "tuned" = the candidate)."""
    metric = next(iter(next(iter(results.values())).metrics))
    refs, meta = [ex.target for ex in examples], metric_meta(spec, examples)
    boot = dict(n_resamples=n_resamples, seed=seed, **meta)
    intervals = {name: score_interval(metric, res.predictions, refs, **boot) for name, res in results.items()}
    selected, where = select_best(results, validation)
    gain = None
    if selected is not None and TUNED in results:
        gain = paired_bootstrap(metric, results[TUNED].predictions, results[selected].predictions, refs, **boot)
    val_key = metric.replace(metric.split("/", 1)[0], "validation", 1)
    on_val = {n: r.metrics[val_key] for n, r in (validation or {}).items() if val_key in r.metrics}
    kshot, best_draw = _kshot(results, on_val, metric)
    return Analysis(metric, selected, where, on_val, intervals, gain,
                    {n: majority_share(r.predictions) for n, r in results.items()}, threshold, kshot, best_draw)


def paired_results(spec: TaskSpec, examples: Sequence[Example], a: EvalResult, b: EvalResult, *,
                   n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """Paired interval of a - b on the primary metric, both scored on `examples` in order."""
    metric = next(iter(a.metrics))
    return paired_bootstrap(metric, a.predictions, b.predictions, [ex.target for ex in examples],
                            n_resamples=n_resamples, seed=seed, **metric_meta(spec, examples))


def _kshot(results: Mapping[str, EvalResult], on_val: Mapping[str, float], metric: str) -> tuple[dict[str, float], str | None]:
    """k-shot draws (uncalibrated rows "k_shot", "k_shot_2", ...): test mean, std and the draw best on validation."""
    draws = [n for n in results if n == "k_shot" or (n.startswith("k_shot_") and n.removeprefix("k_shot_").isdigit())]
    if not draws:
        return {}, None
    scores = [results[n].metrics[metric] for n in draws]
    best = max(draws, key=lambda n: on_val.get(n, float("-inf"))) if on_val else None
    out = {"mean": statistics.fmean(scores), "std": statistics.pstdev(scores), "draws": float(len(draws))}
    if best is not None:
        out["best"] = results[best].metrics[metric]
    return out, best
