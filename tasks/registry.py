"""Registry stages as Prefect tasks: close the MLflow run and register the prompt; decide the @champion alias.

Both talk to MLflow (a server may be briefly unreachable), so both retry on I/O and registry errors.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ptune.model.base import BaseModel
from ptune.pipeline import stages
from ptune.registry import model_registry, promotion
from tasks.policies import retry_on

REGISTRY_TASK = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": retry_on(),
                 "cache_policy": NO_CACHE, "persist_result": False}


@task(**REGISTRY_TASK)
def register_prompt(run: stages.TaskRun, trained: stages.Trained,
                    reported: stages.Reported) -> model_registry.RegisteredPrompt:
    """Record the test and baseline metrics, close the MLflow run with the report, register a version."""
    return stages.register(run, trained, reported)


@task(**REGISTRY_TASK)
def promote_if_better(run: stages.TaskRun, version: str, base: BaseModel | None) -> promotion.Decision:
    """Move @champion to `version` only if it beats the best baseline by min_gain and the current champion."""
    return stages.promote(run, version, base)


@task(**REGISTRY_TASK)
def latest_version(run: stages.TaskRun) -> str:
    """The highest version number of `ptune-<task>` (ConfigError when none is registered)."""
    return model_registry.latest_version(run.name)


@task(**REGISTRY_TASK)
def champion_data_version(run: stages.TaskRun) -> tuple[str, str] | None:
    """(version, data version) of `ptune-<task>@champion`, or None when there is no champion."""
    found = model_registry.alias_version(run.name, "champion")
    return (str(found.version), found.tags.get("data_version", "")) if found is not None else None
