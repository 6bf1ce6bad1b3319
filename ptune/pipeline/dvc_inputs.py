"""`task_inputs.yaml`: the files each task's `fetch` stage reads, so DVC reruns it when they change.

DVC cannot look a user task's `path:` up from params.yaml by the task name inside `foreach` (no nested
`${tasks.${item}.path}` interpolation, and a list cannot be interpolated into `deps`). So dvc.yaml loads
this generated file (`vars:`) and its `fetch` stage iterates over `fetch_inputs`: task -> {data, spec}.
`data` is a user task's data file (built-ins: `ptune/data`, where their pinned source is declared) and
`spec` the file declaring the task (`tasks: {file: x.yaml}`, else the data file again). `ptune dvc-inputs`
writes it; `ptune repro` refreshes it first; `ptune fetch` under `dvc repro` refuses a stale one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from ptune.config import Params
from ptune.data.catalog import get_task
from ptune.data.sources import LocalSource
from ptune.errors import ConfigError
from ptune.fileio import atomic_write_text

FILE = "task_inputs.yaml"
BUILTIN = "ptune/data"
HEADER = ("# Generated from params.yaml by `ptune dvc-inputs` (`ptune repro` refreshes it); do not edit.\n"
          "# dvc.yaml's fetch stage depends on these files: editing your own task's data reruns it.\n")


def _relative(path: Path, project: Path) -> str:
    """`path` relative to the project when inside it (as dvc.yaml paths are), else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(project)) if path.is_relative_to(project) else str(path)


def task_inputs(params: Params, project: Path) -> dict[str, dict[str, str]]:
    """task -> {"data": file, "spec": file} for every task in `run_tasks`."""
    project = Path(project).resolve()
    section = params.tasks
    tasks_file = None
    if isinstance(section, Mapping) and set(section) == {"file"}:
        tasks_file = _relative((params.base_dir or project) / str(section["file"]), project)
    found = {}
    for name in params.run_tasks:
        source = get_task(name, params).source
        if isinstance(source, LocalSource):
            data = _relative(source.path, project)
            found[name] = {"data": data, "spec": tasks_file or data}
        else:
            found[name] = {"data": BUILTIN, "spec": BUILTIN}
    return found


def render(params: Params, project: Path) -> str:
    return HEADER + yaml.safe_dump({"fetch_inputs": task_inputs(params, project)}, sort_keys=False)


def write(params: Params, project: Path) -> Path:
    """Write <project>/task_inputs.yaml (only when its content changes, so DVC sees no needless edit)."""
    path, text = Path(project) / FILE, render(params, project)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path


def check(params: Params, project: Path, task: str) -> None:
    """Under `dvc repro`: refuse to fetch `task` when task_inputs.yaml does not name the files it reads now."""
    path = Path(project) / FILE
    recorded = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("fetch_inputs", {}) if path.is_file() else {}
    wanted = task_inputs(params, project).get(task)
    if wanted is not None and recorded.get(task) != wanted:
        raise ConfigError(f"{path} is stale for task {task!r}: it records {recorded.get(task)!r}, params.yaml "
                          f"needs {wanted!r} (so DVC would miss edits to your data); run `ptune dvc-inputs` "
                          "(or `ptune repro`, which refreshes it) and repeat")


def under_dvc_fetch() -> bool:
    """True when this process is a `fetch` stage run by `dvc repro` (DVC sets $DVC_STAGE)."""
    return os.environ.get("DVC_STAGE", "").startswith("fetch@")
