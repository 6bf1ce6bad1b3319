"""MLflow runs of a sweep (`ptune sweep`): one parent run per Optuna study and one child run per trial
(tag `mlflow.parentRunId`), so the MLflow UI nests the trials under the sweep and compares them; and where
a local study is stored: `optuna.db` (SQLite) next to the MLflow store, so a killed sweep resumes (a shared
one: ptune.studies.sweep_study).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, RunTag

from ptune.paths import project_dir
from ptune.registry.tracking import (
    RUN_KIND_TAG,
    TrainingRun,
    client,
    ensure_experiment,
    guard,
    mlflow_param,
    now_ms,
    tracking_uri,
)

PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "ptune.studies.sweep"  # the Optuna study name, on the parent and on every child


def optuna_storage_url() -> str:
    """`sqlite:///<dir of mlruns.db>/optuna.db` for a SQLite MLflow store; `<project>/optuna.db` otherwise."""
    uri = tracking_uri()
    folder = Path(uri.removeprefix("sqlite:///")).resolve().parent if uri.startswith("sqlite:///") else project_dir()
    return f"sqlite:///{folder / 'optuna.db'}"


def start_parent(task: str, study: str, params: Mapping[str, Any]) -> str:
    """A new parent run `sweep-<task>` (run kind "sweep") in experiment ptune/<task>; returns its id."""
    mlc, experiment_id = client(), ensure_experiment(task)
    tags = {"ptune.task": task, SWEEP_TAG: study, RUN_KIND_TAG: "sweep"}
    with guard(f"sweep run creation for {task!r}"):
        run = mlc.create_run(experiment_id, run_name=f"sweep-{task}", tags=tags)
        mlc.log_batch(run.info.run_id, params=[mlflow_param(k, v) for k, v in sorted(params.items())])
    return run.info.run_id


def reopen_parent(run_id: str) -> None:
    """Mark a resumed sweep's parent run RUNNING again."""
    with guard(f"reopening sweep run {run_id}"):
        client().update_run(run_id, status="RUNNING")


def child_run(task: str, parent_id: str, study: str, trial: int, params: Mapping[str, Any],
              worker: str = "") -> TrainingRun:
    """The training run `trial-<n>` (run kind "trial") of trial `trial`, nested under `parent_id`; started, so
    it shows at once. `worker` (`<host>:<pid>`) says which sweep process ran it."""
    tags = {PARENT_TAG: parent_id, SWEEP_TAG: study, "ptune.trial": str(trial), "ptune.worker": worker}
    run = TrainingRun(task, params, tags=tags, run_name=f"trial-{trial}", kind="trial")
    run.start()
    return run


def end_run(run_id: str, status: str | None, metrics: Mapping[str, float] = (),
            tags: Mapping[str, str] = ()) -> None:
    """Log final metrics (step 0) and tags, then end the run: FINISHED, KILLED (pruned) or FAILED; with
    `status` None the run stays open (a shared sweep's parent while other workers still run trials)."""
    mlc = client()
    with guard(f"ending run {run_id}"):
        mlc.log_batch(run_id, metrics=[Metric(k, float(v), now_ms(), 0) for k, v in dict(metrics).items()],
                      tags=[RunTag(k, str(v)) for k, v in dict(tags).items()])
        if status is not None:
            mlc.set_terminated(run_id, status)


def child_runs(task: str, parent_id: str) -> list:
    """The trials' runs under `parent_id` (mlflow Run objects), oldest first."""
    mlc = client()
    with guard(f"listing the trials of sweep run {parent_id}"):
        runs = mlc.search_runs([ensure_experiment(task)], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                               max_results=10_000)
    return sorted(runs, key=lambda r: r.info.start_time)
