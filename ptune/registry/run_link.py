"""Which MLflow run trained a prompt left on disk, so that `ptune report` and `ptune register` add to that run
instead of opening another one: one task run, one MLflow run (curves, report, model).

A tracked `ptune train` writes `mlflow_run.json` beside the prompt directory (`outputs/<task>/`; the prompt
directory's own files are a fixed set): the run id, the tracking URI and the sha256 of the prompt it trained.
A later step follows the link only when the prompt still has that hash (not retrained untracked, not replaced),
the tracking URI is the same and the run still exists; otherwise there is no training run to add to.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mlflow.exceptions import MlflowException

from ptune.fileio import atomic_write_bytes
from ptune.registry import report_match, tracking
from ptune.registry.integrity import prompt_sha256

LINK = "mlflow_run.json"


def link_path(prompt_dir: str | Path) -> Path:
    return Path(prompt_dir).parent / LINK


def record(prompt_dir: str | Path, run_id: str | None) -> Path | None:
    """Write the link from the prompt at `prompt_dir` to the run `run_id` that trained it; with no run (an
    untracked training) remove a link left by an earlier one."""
    path = link_path(prompt_dir)
    if run_id is None:
        path.unlink(missing_ok=True)
        return None
    info = {"run_id": run_id, "tracking_uri": tracking.tracking_uri(), "prompt_sha256": prompt_sha256(prompt_dir)}
    atomic_write_bytes(path, (json.dumps(info, indent=2) + "\n").encode())
    return path


def training_run(prompt_dir: str | Path) -> str | None:
    """The id of the MLflow run that trained this very prompt, in the current store, or None."""
    path = link_path(prompt_dir)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        run_id = str(info["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if info.get("tracking_uri") != tracking.tracking_uri() or info.get("prompt_sha256") != prompt_sha256(prompt_dir):
        return None
    try:
        found = tracking.client().get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return None
        with tracking.guard(f"lookup of run {run_id}"):
            raise
    return run_id if found.info.lifecycle_stage == "active" else None


def log_report(task: str, prompt_dir: str | Path, metrics_file: str | Path, report_files: Sequence[str | Path],
               predictions: str | Path | None = None) -> str | None:
    """Log a report of the prompt at `prompt_dir` (every number of its metrics JSON, its files) to the run
    that trained that prompt; the run id, or None when the prompt has no training run."""
    run_id = training_run(prompt_dir)
    if run_id is None:
        return None
    return tracking.resume(task, run_id).finish(None, report_match.numbers(Path(metrics_file)),
                                                report_files=report_files, predictions=predictions)
