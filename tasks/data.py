"""Data stages as Prefect tasks: fetch (retried: it downloads), prepare and validate (cached on their inputs).

Cache keys hash the ML task's identity, the `data:` settings and the input files, so a re-run with
nothing changed skips the stage, and any change (params, raw data, prepared files) recomputes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from ptune import data, validation
from ptune.catalog import TaskSpec, get_task
from ptune.config import Params
from ptune.paths import prepared_dir, raw_path, validation_dir
from tasks.policies import retry_on


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def spec_identity(spec: TaskSpec) -> dict[str, Any]:
    """What defines a task's data, as JSON (a function formatter is named; a template formatter is its repr)."""
    fmt = spec.formatter
    formatter = repr(fmt) if hasattr(fmt, "__dataclass_fields__") else f"{fmt.__module__}.{fmt.__qualname__}"
    return {"name": spec.name, "kind": spec.kind, "source": spec.source.describe(), "columns": list(spec.columns),
            "formatter": formatter, "labels": list(spec.label_words), "metrics": list(spec.metrics),
            "max_source_tokens": spec.max_source_tokens, "max_target_tokens": spec.max_target_tokens}


def data_key(stage: str, task_name: str, params: Params, *files: Path) -> str:
    """sha256 over stage + ML task identity + `data:` settings + the given files' contents."""
    spec = get_task(task_name, params)
    parts = {"stage": stage, "task": spec_identity(spec), "data": data.data_settings(params),
             "files": [_sha256_file(f) for f in files]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _prepared_files(task_name: str) -> list[Path]:
    return [prepared_dir(task_name) / f"{split}.jsonl" for split in data.SPLITS]


def prepare_cache_key(ctx: TaskRunContext, inputs: dict[str, Any]) -> str | None:
    """Key over (task, params, raw file, prepared files); None (recompute) while any of them is missing."""
    files = [raw_path(inputs["task_name"]), *_prepared_files(inputs["task_name"])]
    if not all(f.exists() for f in files):
        return None
    return data_key(ctx.task.name, inputs["task_name"], inputs["params"], *files)


def validate_cache_key(ctx: TaskRunContext, inputs: dict[str, Any]) -> str | None:
    """Key over (task, params, prepared files): the same data is validated once."""
    files = _prepared_files(inputs["task_name"])
    if not all(f.exists() for f in files):
        return None
    return data_key(ctx.task.name, inputs["task_name"], inputs["params"], *files)


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_on())
def fetch_task_data(task_name: str, params: Params) -> str:
    """Raw rows into data/raw/<task>.jsonl. Retried: pinned packages are downloaded on first use."""
    return str(data.fetch(task_name, params))


@task(cache_key_fn=prepare_cache_key, persist_result=True)
def prepare_split(task_name: str, params: Params) -> dict[str, int]:
    """Format, dedupe and split into data/prepared/<task>/; returns rows per split."""
    return data.prepare(task_name, params)


@task(cache_key_fn=validate_cache_key, persist_result=True)
def validate_split(task_name: str, params: Params) -> dict[str, Any]:
    """Great Expectations suite from the TaskSpec; raises ValidationFailed listing every failed expectation.

    No retries: the same data fails the same way. The report is in data/validation/<task>/report.md."""
    return validation.validate(task_name, params)


def validation_report(task_name: str) -> str:
    """The markdown report the last validation of `task_name` wrote (empty when none was written)."""
    path = validation_dir(task_name) / "report.md"
    return path.read_text(encoding="utf-8") if path.exists() else ""
