"""Promotion: move alias `champion` of `ptune-<task>` only when the candidate wins (ARCHITECTURE.md).

Rule: the candidate's test metric must (a) beat the best hard-prompt baseline by at least
`promote.min_gain` and (b) be at least as good as the current champion re-evaluated on the same current
test split. A win moves `champion`; a loss sets `challenger`. Either way the version gets a
`promotion_reason` tag. The alias move is the last write, so a failure before it leaves the aliases as
they were. Read-decide-write runs under a per-task file lock and re-reads the champion inside it, so two
promotions racing end with the better version as champion. MLflow is reached through
`ptune.registry.model_registry` only; scoring a version is the caller's `Evaluator` (see ptune.stages).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ptune.errors import RegistryError
from ptune.fileio import file_lock
from ptune.paths import ptune_home
from ptune.registry import model_registry as registry

Evaluator = Callable[[str, str], dict[str, float]]  # (version, split) -> {"<split>/<metric>": value}
EPS = 1e-9  # float noise allowed in "at least as good"


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

    @property
    def promoted(self) -> bool:
        return self.alias == "champion"


def lock_path(task: str) -> Path:
    """`$PTUNE_HOME/locks/<task>.lock`: one lock per task for every promotion on this machine."""
    return ptune_home() / "locks" / f"{task}.lock"


@contextmanager
def task_lock(task: str) -> Iterator[None]:
    """Exclusive fcntl lock on the task's lock file (works across threads and processes)."""
    with file_lock(lock_path(task)):
        yield


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


def decide(task: str, version: str, min_gain: float, evaluator: Evaluator,
           reevaluate_candidate: bool = False) -> Decision:
    """Apply the promotion rule (reads only). The champion, if any, is re-evaluated on the current test split."""
    tags = registry.version_tags(task, version)
    metric = tags.get("primary_metric", "test/accuracy")
    split = metric.split("/", 1)[0]
    what = f"{registry.model_name(task)} version {version}"
    recorded = recorded_metrics(task, version, tags)
    candidate = evaluator(version, split)[metric] if reevaluate_candidate else _score(recorded, metric, what)
    baseline = best_baseline(recorded, metric)
    champ = registry.alias_version(task, "champion")
    champ_version = None if champ is None else str(champ.version)
    champ_score = None
    if champ_version is not None and champ_version != str(version):
        champ_score = evaluator(champ_version, split)[metric]
    decision = dict(task=task, version=str(version), metric=metric, candidate=candidate, best_baseline=baseline,
                    champion_version=champ_version, champion_score=champ_score)
    if champ_version == str(version):
        return Decision(alias="champion", reason=f"already champion ({metric}={candidate:.4f})", **decision)
    if baseline is None:
        return Decision(alias="challenger", reason=f"no baseline {metric} recorded; cannot apply the rule", **decision)
    if candidate - baseline < min_gain - EPS:
        reason = (f"{metric}={candidate:.4f} does not beat the best baseline {baseline:.4f} by min_gain {min_gain}")
        return Decision(alias="challenger", reason=reason, **decision)
    if champ_score is not None and candidate < champ_score - EPS:
        reason = (f"{metric}={candidate:.4f} is below champion v{champ_version} re-evaluated on the current "
                  f"{split} split ({champ_score:.4f})")
        return Decision(alias="challenger", reason=reason, **decision)
    against = "no champion yet" if champ_score is None else f"champion v{champ_version} scored {champ_score:.4f}"
    reason = f"{metric}={candidate:.4f} beats best baseline {baseline:.4f} (min_gain {min_gain}); {against}"
    return Decision(alias="champion", reason=reason, **decision)


def promote_if_better(task: str, version: str | int, min_gain: float = 0.0, *, evaluator: Evaluator,
                      dry_run: bool = False, reevaluate_candidate: bool = False) -> Decision:
    """Decide under the task lock and, unless `dry_run`, write: reason tags first, alias move last."""
    with task_lock(task):
        decision = decide(task, str(version), min_gain, evaluator, reevaluate_candidate)
        if not dry_run:
            _write(decision)
    return decision


def _write(decision: Decision) -> None:
    """Tag the version with the reason and scores, then move the alias (the last write)."""
    tags = {"promotion_reason": decision.reason, "promotion_decision": decision.alias}
    if decision.champion_score is not None:
        tags["promotion_champion_score"] = repr(decision.champion_score)
        tags["promotion_champion_version"] = str(decision.champion_version)
    registry.set_version_tags(decision.task, decision.version, tags)
    if decision.alias == "challenger" or decision.champion_version != decision.version:
        registry.set_alias(decision.task, decision.alias, decision.version)
