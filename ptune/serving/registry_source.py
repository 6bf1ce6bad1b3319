"""Load the registry's `ptune-<task>@<alias>` of every served task, and follow the alias (hot swap).

The version number is looked up first and the prompt downloaded by that number, so an alias that moves
in between cannot give a version label that differs from the tensor behind it. `RegistryWatcher` polls
the aliases in a thread; a new version is fully loaded (checked, prefix cached) before it replaces the
old one in the `MultiPromptModel`, so no request fails or mixes versions during a swap. A new version
that cannot be loaded (wrong base model, broken artifact, registry down) is logged and counted, and the
old one keeps serving (a refused artifact is retried once the alias points elsewhere and comes back; a
registry error is retried at the next poll). `state` gives, per task, the version the alias points at next
to the one served, and "degraded" with the reason while they differ (GET /health, GET /v1/tasks).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ptune.config import project_params
from ptune.data.catalog import get_task
from ptune.data.spec import TaskSpec
from ptune.errors import ArtifactError, ConfigError, PtuneError
from ptune.registry import model_registry, promotion, stored_spec
from ptune.serving.multi_prompt import LoadedTask, MultiPromptModel

log = logging.getLogger(__name__)


def alias_version(task: str, alias: str) -> str | None:
    found = model_registry.alias_version(task, alias)
    return None if found is None else str(found.version)


def load_version(model: MultiPromptModel, task: TaskSpec | str, version: str) -> LoadedTask:
    """Download version `version` of `ptune-<task>` and serve it with the task spec stored with it (its
    task_spec.json, checked against the registry's tag; never the local params.yaml). A version registered
    before specs were stored is served with `task` when it is a spec, else the catalog's / params.yaml's
    (with a warning). ArtifactError on a fingerprint or hash mismatch."""
    name = task if isinstance(task, str) else task.name
    where = f"models:/{model_registry.model_name(name)}/{version}"
    with tempfile.TemporaryDirectory() as tmp:
        prompt_dir = model_registry.download_prompt(name, Path(tmp) / "prompt", version=version)
        spec = stored_spec.registered_spec(prompt_dir, model_registry.version_tags(name, version), where,
                                           lambda: get_task(task, project_params()))
        return model.load(spec, prompt_dir, version=version)


def load_aliased(model: MultiPromptModel, tasks: Sequence[TaskSpec | str],
                 alias: str = "champion") -> list[LoadedTask]:
    """Serve `<alias>` of every task (a name, or a spec used only for versions that stored none); ConfigError
    naming every task without that alias."""
    versions = {task_name(task): alias_version(task_name(task), alias) for task in tasks}
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        raise ConfigError(f"no registry version has alias @{alias} for task(s) {missing}: train and promote "
                          f"them first (`ptune train`, `ptune promote`), or leave them out with --tasks")
    return [load_version(model, task, str(versions[task_name(task)])) for task in tasks]


def task_name(task: TaskSpec | str) -> str:
    return task if isinstance(task, str) else task.name


@dataclass(frozen=True)
class VersionScore:
    """A version's recorded test score on its primary metric, beside the best baseline's (None: not recorded)."""

    metric: str  # "test/accuracy"
    value: float | None
    baseline: float | None  # the best hand-written prompt (chosen on validation), on test


def version_score(spec: TaskSpec, version: str) -> VersionScore:
    """What the registry recorded for `version` of `ptune-<task>`: its tags and LoggedModel metrics
    (PtuneError when the registry cannot be read)."""
    tags = model_registry.version_tags(spec.name, version)
    metric = tags.get("primary_metric") or f"test/{spec.metrics[0]}"
    recorded = promotion.recorded_metrics(spec.name, version, tags)
    value = float(recorded[metric]) if metric in recorded else None
    return VersionScore(metric, value, promotion.evidence({k: str(v) for k, v in recorded.items()}, metric).baseline)


class RegistryWatcher:
    """Polls `<alias>` of every served task every `seconds`; loads a version when the alias moves."""

    def __init__(self, model: MultiPromptModel, specs: Sequence[TaskSpec | str], alias: str, seconds: float,
                 on_event: Callable[[str, str], None] | None = None) -> None:
        self.model, self.specs, self.alias, self.seconds = model, list(specs), alias, seconds
        self.on_event = on_event or (lambda task, outcome: None)  # (task, "swapped" | "failed")
        self._stop = threading.Event()
        self._refused: dict[str, str] = {}  # task -> version whose artifact was refused, until the alias moves
        self.aliased: dict[str, str | None] = {t: v.version for t, v in model.snapshot().items()}  # last poll
        self.problems: dict[str, str] = {}  # task -> why the version the alias points at is not served
        self._thread = threading.Thread(target=self._loop, name="ptune-registry-watcher", daemon=True)

    def start(self) -> RegistryWatcher:
        if self.seconds > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.seconds):
            self.poll()

    def poll(self) -> list[str]:
        """One pass over the tasks; returns the tasks swapped to a new version."""
        return [task_name(spec) for spec in self.specs if self._poll_task(spec)]

    def _poll_task(self, spec: TaskSpec | str) -> bool:
        name = task_name(spec)
        served = self.model.snapshot().get(name)
        try:
            version = alias_version(name, self.alias)
        except PtuneError as exc:  # registry down: retried at the next poll
            self._failed(name, None, exc)
            return False
        self.aliased[name] = version
        if self._refused.get(name) not in (None, version):  # the alias moved: a refused version gets a new try
            log.info("task %s: @%s moved off refused version %s", name, self.alias, self._refused.pop(name))
        if version is None or (served is not None and served.version == version):
            self.problems.pop(name, None)
            return False
        if self._refused.get(name) == version:
            return False
        try:
            load_version(self.model, spec, version)
        except PtuneError as exc:  # keep serving the old version; say why the new one was refused
            if isinstance(exc, ArtifactError):  # wrong base model, broken artifact: not retried until the alias moves
                self._refused[name] = version
            self._failed(name, version, exc)
            return False
        self.problems.pop(name, None)
        log.info("task %s: now serving version %s (@%s)", name, version, self.alias)
        self.on_event(name, "swapped")
        return True

    def _failed(self, name: str, version: str | None, exc: Exception) -> None:
        self.problems[name] = f"version {version} refused: {exc}" if version else f"registry lookup failed: {exc}"
        log.error("task %s: not swapping to @%s: %s", name, self.alias, self.problems[name])
        self.on_event(name, "failed")

    def state(self, name: str, served: str | None) -> tuple[str | None, str, str | None]:
        """(version the alias points at, "ok" | "degraded", why) of one task, as of the last poll."""
        aliased, problem = self.aliased.get(name, served), self.problems.get(name)
        if aliased != served and problem is None:
            problem = f"@{self.alias} points at version {aliased}, not yet loaded"
        return aliased, "ok" if problem is None else "degraded", problem
