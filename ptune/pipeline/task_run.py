"""`TaskRun`: one task resolved once (params with its overrides, spec, paths), and the prepared splits it reads.
The pipeline steps over it are in ptune.pipeline.stages."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from ptune import paths
from ptune.config import Params
from ptune.data import splits
from ptune.data.catalog import get_task
from ptune.data.spec import TaskSpec
from ptune.data.splits import Example
from ptune.training.store import location

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPaths:
    """Where one run of one task writes. `root` is outputs/<task> for the CLI and DVC, and
    outputs/<task>/prefect/<flow run> for Prefect (so a retry resumes and a new flow run starts fresh)."""

    root: Path
    metrics_file: Path  # metrics/<task>.json (CLI, DVC) or <root>/report/metrics.json

    @property
    def prompt_dir(self) -> Path:
        return self.root / "prompt"

    @property
    def curve(self) -> Path:
        return self.root / "train_curve.csv"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"


@dataclass(frozen=True)
class TaskRun:
    """One task, resolved once: its params (task_overrides and any caller overrides applied), spec and paths."""

    params: Params
    spec: TaskSpec
    paths: RunPaths

    @classmethod
    def build(cls, task: str, params: Params, *, run_dir: Path | None = None, metrics_file: Path | None = None,
              source: str = "overrides", model: str | None = None, **sections: dict) -> TaskRun:
        """Resolve `task` in `params`; `model` and `sections` (train={...}, evaluate={...}) are the caller's
        overrides on top of `task_overrides`, validated and named `source` in errors ("form", "--steps")."""
        resolved = params.for_task(task).with_overrides(source, model=model, **sections)
        spec = get_task(task, resolved)
        root = Path(run_dir) if run_dir else paths.runs_dir() / spec.name
        metrics = Path(metrics_file) if metrics_file else (paths.metrics_path(spec.name) if run_dir is None
                                                            else root / "report" / "metrics.json")
        _warn_if_never_promotable(spec.name, scored_test_cap(resolved), resolved.promote.min_examples)
        return cls(resolved, spec, RunPaths(root, metrics))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def checkpoint(self) -> str:
        """Where training checkpoints live: <root>/checkpoint, or <train.checkpoint_uri>/<task>/..., shared by
        every machine running this task (ptune.training.store.location)."""
        return location(self.params.train.checkpoint_uri, self.name, self.paths.root)

    @property
    def data_version(self) -> str:
        """Hash of the prepared splits (DataError when the task is not prepared yet)."""
        return splits.data_version(self.name)

    def examples(self, split: str, *, capped: bool = True) -> list[Example]:
        """A prepared split; validation and test are capped at `evaluate.max_examples` unless `capped=False`."""
        path = paths.prepared_dir(self.name) / f"{split}.jsonl"
        stamp = (str(path), path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None
        rows = _read_split(self.name, split, stamp)
        limit = self.params.evaluate.max_examples if capped and split != "train" else 0
        return list(rows[:limit or None])


def scored_test_cap(params: Params) -> int:
    """The most test examples a run scores: data.max_test and evaluate.max_examples (0 = no cap)."""
    caps = [c for c in (params.data.max_test, params.evaluate.max_examples) if c]
    return min(caps, default=0)


@functools.lru_cache(maxsize=64)
def _warn_if_never_promotable(task: str, cap: int, min_examples: int) -> None:
    """Say once per process, before any training, when the promotion gate can never pass for a task."""
    if cap and cap < min_examples:
        log.warning("task %s: at most %d test examples are scored (data.max_test / evaluate.max_examples) but "
                    "promote.min_examples is %d, so its prompts can only become @challenger; raise the cap (in "
                    "task_overrides.%s) or lower promote.min_examples", task, cap, min_examples, task)


@functools.lru_cache(maxsize=16)
def _read_split(task: str, split: str, stamp: tuple[str, int, int] | None) -> tuple[Example, ...]:
    """Read once per file version (`stamp` = path, mtime and size): every step of a run shares the parse."""
    return tuple(splits.load_split(task, split))
