"""Registry stages as Prefect tasks: close the MLflow run and register the prompt; decide the @champion alias.

Both talk to MLflow (a server may be briefly unreachable), so both retry on I/O and registry errors.
Promotion holds the task's Prefect global concurrency limit `ptune-promote-<task>` (1 slot, made when missing):
workers on any machine know the Prefect server, so one promotion of a task runs at a time team-wide. Inside it
ptune takes its own lock too (ptune.registry.locks: a file, or PostgreSQL with PTUNE_LOCK_URL, which is how a
`ptune promote` typed on a laptop waits for the flows).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import task
from prefect.cache_policies import NO_CACHE

from ptune.model.base import BaseModel
from ptune.pipeline import stages
from ptune.registry import model_registry, promotion
from tasks.limits import slot
from tasks.policies import retry_on

PROMOTION_WAIT_S = 3600.0  # another promotion of the task (re-scoring two versions) should be over by then
REGISTRY_TASK = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": retry_on(),
                 "cache_policy": NO_CACHE, "persist_result": False}


@task(**REGISTRY_TASK)
def register_prompt(run: stages.TaskRun, trained: stages.Trained,
                    reported: stages.Reported) -> model_registry.RegisteredPrompt:
    """Record the test and baseline metrics, close the MLflow run with the report, register a version."""
    return stages.register(run, trained, reported)


@task(**REGISTRY_TASK)
def promote_if_better(run: stages.TaskRun, version: str, base: BaseModel | None) -> promotion.Decision:
    """Move @champion to `version` only if it beats the best baseline by min_gain and the current champion;
    one promotion of the task at a time on every worker (`promotion_lock`)."""
    with promotion_lock(run.name):
        return stages.promote(run, version, base)


def promotion_limit(task_name: str) -> str:
    """The Prefect global concurrency limit of one task's promotions."""
    return f"ptune-promote-{task_name}"


@contextmanager
def promotion_lock(task_name: str) -> Iterator[None]:
    """A `ptune.registry.locks.TaskLock` every worker of the Prefect server sees: the task's limit, one slot."""
    with slot(promotion_limit(task_name), timeout_s=PROMOTION_WAIT_S):
        yield


@task(**REGISTRY_TASK)
def latest_version(run: stages.TaskRun) -> str:
    """The highest version number of `ptune-<task>` (ConfigError when none is registered)."""
    return model_registry.latest_version(run.name)


@task(**REGISTRY_TASK)
def champion_data_version(run: stages.TaskRun) -> tuple[str, str] | None:
    """(version, data version) of `ptune-<task>@champion`, or None when there is no champion."""
    found = model_registry.alias_version(run.name, "champion")
    return (str(found.version), found.tags.get("data_version", "")) if found is not None else None
