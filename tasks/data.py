"""Data stages as Prefect tasks: fetch (retried: it downloads), prepare and validate (cached on their inputs).

Each step holds the workspace lock of `ptune repro` (ptune/pipeline/repro.py) while it runs, so a Prefect data step and a
`dvc repro` never write the same task's files at once. Persisted results (the cache) are JSON, never pickle.

Cache keys hash the ML task's identity, the `data:` settings and the input files, so a re-run with
nothing changed skips the stage, and any change (params, raw data, prepared files) recomputes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from ptune.data.spec import spec_identity
from ptune.data.splits import SPLITS
from ptune.fileio import sha256_of, sha256_text
from ptune.paths import prepared_dir, project_dir, raw_path, validation_dir
from ptune.pipeline import stages
from ptune.pipeline.repro import workspace_lock
from tasks.policies import retry_on


def data_key(stage: str, run: stages.TaskRun, files: list[Path]) -> str | None:
    """sha256 over stage + ML task identity + `data:` settings + the files' contents; None (recompute)
    while any file is missing."""
    if not all(f.exists() for f in files):
        return None
    parts = {"stage": stage, "task": spec_identity(run.spec), "data": run.params.data.to_dict(),
             "files": [sha256_of(f) for f in files]}
    return sha256_text(json.dumps(parts, sort_keys=True, default=str))


def _prepared_files(name: str) -> list[Path]:
    return [prepared_dir(name) / f"{split}.jsonl" for split in SPLITS]


def prepare_cache_key(ctx: TaskRunContext, inputs: dict[str, Any]) -> str | None:
    """Key over (task, data settings, raw file, prepared files)."""
    run = inputs["run"]
    return data_key(ctx.task.name, run, [raw_path(run.name), *_prepared_files(run.name)])


def validate_cache_key(ctx: TaskRunContext, inputs: dict[str, Any]) -> str | None:
    """Key over (task, data settings, prepared files): the same data is validated once."""
    return data_key(ctx.task.name, inputs["run"], _prepared_files(inputs["run"].name))


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_on(), cache_policy=NO_CACHE,
      persist_result=False)
def fetch_task_data(run: stages.TaskRun) -> str:
    """Raw rows into data/raw/<task>.jsonl. Retried: pinned packages are downloaded on first use."""
    with workspace_lock(project_dir()):
        return str(stages.fetch(run))


@task(cache_key_fn=prepare_cache_key, persist_result=True, result_serializer="json")
def prepare_split(run: stages.TaskRun) -> dict[str, Any]:
    """Format, dedupe and split into data/prepared/<task>/; returns rows per split and the data version."""
    with workspace_lock(project_dir()):
        done = stages.prepare(run)
    return {"counts": dict(done.counts), "data_version": done.data_version}


@task(cache_key_fn=validate_cache_key, persist_result=True, result_serializer="json")
def validate_split(run: stages.TaskRun) -> dict[str, Any]:
    """Great Expectations suite from the TaskSpec; raises ValidationFailed listing every failed expectation.

    No retries: the same data fails the same way. The report is in data/validation/<task>/report.md."""
    with workspace_lock(project_dir()):
        return stages.validate(run)


def validation_report(task_name: str) -> str:
    """The markdown report the last validation of `task_name` wrote (empty when none was written)."""
    path = validation_dir(task_name) / "report.md"
    return path.read_text(encoding="utf-8") if path.exists() else ""
