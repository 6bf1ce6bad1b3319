"""Promotion: move alias `champion` of `ptune-<task>` only when the candidate wins (ARCHITECTURE.md).

Rule (`promote:` in params.yaml, `gate`; docs/evaluation.md): the candidate must
(0) have been evaluated on at least `min_examples` test rows and not be degenerate (one answer for nearly
every row, `evaluate.degenerate_share`);
(a) beat the best hard-prompt baseline (chosen on VALIDATION, scored on test) by MORE than `min_gain`, so a
tie never promotes, and with `require_significant` the lower bound of the paired 95% bootstrap interval of
(candidate - best baseline) must exceed `min_gain` too;
(b) against the current champion re-evaluated on the same current test split: with `require_significant`,
the paired interval of (candidate - champion) must lie above 0; without it, at least as good.
A win moves `champion`; a loss sets `challenger`. Either way the version gets a `promotion_reason` tag that
quotes the numbers and intervals. Called without a `gate`, only (a) with `min_gain` and (b) "at least as
good" apply (the rule before issue 11). The alias move is the last write, so a failure before it leaves the aliases as
they were. Read-decide-write runs under a per-task lock (`ptune.registry.locks`: a file on one host, a
PostgreSQL advisory lock with PTUNE_LOCK_URL, or any `lock=` a caller gives, such as the Prefect limit of
tasks/registry.py) and re-reads the champion inside it, so two promotions racing end with the better version as
champion. MLflow is reached through
`ptune.registry.model_registry` only; scoring a version is the caller's `Evaluator` (see ptune.pipeline.stages).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ptune.config.sections import PromoteConfig
from ptune.errors import RegistryError
from ptune.evaluation.stats import Interval
from ptune.registry import locks
from ptune.registry import model_registry as registry

Evaluator = Callable[[str, str], dict[str, float]]  # (version, split) -> {"<split>/<metric>": value}
Comparer = Callable[[str, str, str], Interval]  # (candidate, champion, split) -> paired interval of candidate - champion
EPS = 1e-9  # float noise allowed in "at least as good"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """What promotion decided for one candidate version, and why."""

    task: str
    version: str
    alias: str  # "champion" or "challenger"
    reason: str
    metric: str  # e.g. "test/accuracy"
    candidate: float
    best_baseline: float | None
    champion_version: str | None  # the champion before this decision
    champion_score: float | None  # that champion re-evaluated on the current split
    champion_interval: Interval | None = None  # paired (candidate - champion) on the current split

    @property
    def promoted(self) -> bool:
        return self.alias == "champion"


def recorded_metrics(task: str, version: str, tags: dict[str, str]) -> dict[str, str | float]:
    """The test and baseline metrics recorded for a version: its LoggedModel metrics (MLflow 3), over the
    metric tags that versions registered before them carry (values as repr() strings)."""
    return {**tags, **registry.version_metrics(task, version)}


def _score(tags: dict[str, str | float], key: str, what: str) -> float:
    if key not in tags:
        raise RegistryError(f"{what} has no {key!r} value (tags: {sorted(tags)})")
    return float(tags[key])


def best_baseline(tags: dict[str, str | float], metric: str) -> float | None:
    """Best "baseline/<name>/<metric>" value among a version's tags, or None when none was logged."""
    values = [float(v) for k, v in tags.items() if k.startswith("baseline/") and k.endswith("/" + metric)
              and k.count("/") == metric.count("/") + 2]
    return max(values) if values else None


@dataclass(frozen=True)
class Evidence:
    """What the candidate's report recorded for the gate (its version's tags; keys as in metrics/<task>.json)."""

    n: int | None  # test examples
    degenerate: bool
    baseline: float | None  # the best baseline (chosen on validation), on test
    gain_low: float | None  # paired 95% interval of (candidate - best baseline)
    gain_high: float | None


def evidence(tags: Mapping[str, str], metric: str) -> Evidence:
    """Evidence from a version's tags; absent keys (versions registered before issue 11) stay None/False."""
    split = metric.split("/", 1)[0]

    def num(key: str) -> float | None:
        return float(tags[key]) if key in tags else None

    n, best = num(f"{split}/n"), num(f"baseline/best/{metric}")
    return Evidence(None if n is None else int(n), num(f"{split}/degenerate") == 1.0,
                    best if best is not None else best_baseline(dict(tags), metric),
                    num(f"gain/{metric}/ci_low"), num(f"gain/{metric}/ci_high"))


def baseline_refusal(metric: str, candidate: float, ev: Evidence, gate: PromoteConfig) -> str | None:
    """Why the candidate fails rule (0) or (a), or None when it passes."""
    split = metric.split("/", 1)[0]
    if gate.min_examples and (ev.n is None or ev.n < gate.min_examples):
        seen = "an unrecorded number of" if ev.n is None else str(ev.n)
        return (f"evaluated on {seen} {split} examples, fewer than promote.min_examples {gate.min_examples}: "
                "too few to tell a gain from noise")
    if ev.degenerate:
        return f"degenerate: one answer for nearly every {split} row (evaluate.degenerate_share); never promoted"
    if ev.baseline is None:
        return f"no baseline {metric} recorded; cannot apply the rule"
    gain = candidate - ev.baseline
    if abs(gain) <= EPS and gate.min_gain >= 0:
        return f"{metric}={candidate:.4f} ties the best baseline {ev.baseline:.4f}: a tie never promotes"
    if gain <= gate.min_gain + EPS:
        return f"{metric}={candidate:.4f} does not beat the best baseline {ev.baseline:.4f} by more than min_gain {gate.min_gain}"
    if gate.require_significant:
        if ev.gain_low is None or ev.gain_high is None:
            return "no 95% interval of the gain over the best baseline recorded (promote.require_significant)"
        if ev.gain_low <= gate.min_gain + EPS:
            return (f"{metric}={candidate:.4f} vs best baseline {ev.baseline:.4f}: gain {gain:+.4f} [95% CI "
                    f"{ev.gain_low:+.4f}, {ev.gain_high:+.4f}], lower bound not above min_gain {gate.min_gain} "
                    "(promote.require_significant)")
    return None


def champion_refusal(metric: str, candidate: float, champ_version: str | None, champ_score: float | None,
                     interval: Interval | None, gate: PromoteConfig) -> str | None:
    """Why the candidate fails rule (b) against the current champion, or None when it passes (or none exists)."""
    if champ_version is None or champ_score is None:
        return None
    split = metric.split("/", 1)[0]
    where = f"champion v{champ_version} re-evaluated on the current {split} split"
    if gate.require_significant:
        if interval is None:
            return f"no paired comparison with {where} (promote.require_significant)"
        if interval.low <= EPS:
            return (f"not significantly better than {where}: {metric} {interval.a:.4f} vs {interval.b:.4f}, "
                    f"difference {interval.text()}")
    elif candidate < champ_score - EPS:
        return f"{metric}={candidate:.4f} is below {where} ({champ_score:.4f})"
    return None


def _win_reason(metric: str, candidate: float, ev: Evidence, gate: PromoteConfig, champ_version: str | None,
                champ_score: float | None, interval: Interval | None) -> str:
    gain = f"beats best baseline {ev.baseline:.4f} (min_gain {gate.min_gain})"
    if ev.gain_low is not None and ev.gain_high is not None:
        gain += f", gain {candidate - ev.baseline:+.4f} [95% CI {ev.gain_low:+.4f}, {ev.gain_high:+.4f}]"
    if champ_score is None:
        against = "no champion yet"
    elif interval is not None:
        against = f"vs champion v{champ_version}: {interval.text()}"
    else:
        against = f"champion v{champ_version} scored {champ_score:.4f}"
    return f"{metric}={candidate:.4f} {gain}; {against}"


def decide(task: str, version: str, min_gain: float, evaluator: Evaluator, reevaluate_candidate: bool = False,
           gate: PromoteConfig | None = None, compare: Comparer | None = None) -> Decision:
    """Apply the promotion rule (reads only). The champion, if any, is re-evaluated on the current test split
    (`compare`: paired with the candidate, both scored there)."""
    gate = gate or PromoteConfig(min_gain=min_gain, require_significant=False, min_examples=0)
    tags = registry.version_tags(task, version)
    metric = tags.get("primary_metric", "test/accuracy")
    split = metric.split("/", 1)[0]
    what = f"{registry.model_name(task)} version {version}"
    recorded = recorded_metrics(task, version, tags)
    if reevaluate_candidate:
        log.info("promotion: re-scoring %s on the current %s split", what, split)
    candidate = evaluator(version, split)[metric] if reevaluate_candidate else _score(recorded, metric, what)
    ev = evidence(recorded, metric)
    champ = registry.alias_version(task, "champion")
    champ_version = None if champ is None else str(champ.version)
    champ_score, interval = None, None
    if champ_version is not None and champ_version != str(version):
        log.info("promotion: re-scoring the champion, version %s, on the current %s split", champ_version, split)
        interval = compare(str(version), champ_version, split) if compare is not None else None
        champ_score = interval.b if interval is not None else evaluator(champ_version, split)[metric]
    decision = dict(task=task, version=str(version), metric=metric, candidate=candidate, best_baseline=ev.baseline,
                    champion_version=champ_version, champion_score=champ_score, champion_interval=interval)
    if champ_version == str(version):
        return Decision(alias="champion", reason=f"already champion ({metric}={candidate:.4f})", **decision)
    refusal = (baseline_refusal(metric, candidate, ev, gate)
               or champion_refusal(metric, candidate, champ_version, champ_score, interval, gate))
    if refusal:
        return Decision(alias="challenger", reason=refusal, **decision)
    return Decision(alias="champion", reason=_win_reason(metric, candidate, ev, gate, champ_version, champ_score,
                                                         interval), **decision)


def promote_if_better(task: str, version: str | int, min_gain: float = 0.0, *, evaluator: Evaluator,
                      dry_run: bool = False, reevaluate_candidate: bool = False, gate: PromoteConfig | None = None,
                      compare: Comparer | None = None, lock: locks.TaskLock | None = None) -> Decision:
    """Decide under the task lock and, unless `dry_run`, write: reason tags first, alias move last.
    `gate` (params.yaml `promote:`) replaces `min_gain` when given. `lock` (default `locks.configured_lock()`)
    must be one every process that may promote this task waits on."""
    with (lock or locks.configured_lock())(task):
        decision = decide(task, str(version), min_gain, evaluator, reevaluate_candidate, gate, compare)
        if not dry_run:
            _write(decision)
    return decision


def _write(decision: Decision) -> None:
    """Tag the version with the reason and scores, then move the alias (the last write)."""
    tags = {"promotion_reason": decision.reason, "promotion_decision": decision.alias}
    if decision.champion_score is not None:
        tags["promotion_champion_score"] = repr(decision.champion_score)
        tags["promotion_champion_version"] = str(decision.champion_version)
    if decision.champion_interval is not None:
        ci = decision.champion_interval
        tags.update({"promotion_champion_diff": repr(ci.diff), "promotion_champion_diff_ci_low": repr(ci.low),
                     "promotion_champion_diff_ci_high": repr(ci.high), "promotion_champion_n": str(ci.n)})
    registry.set_version_tags(decision.task, decision.version, tags)
    if decision.alias == "challenger" or decision.champion_version != decision.version:
        registry.set_alias(decision.task, decision.alias, decision.version)
