"""Registry stages as Prefect tasks: finish the MLflow run and register the prompt; decide the @champion alias.

Both talk to MLflow (a server may be briefly unreachable), so both retry on I/O and registry errors.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from ptune import artifacts, promotion, registry, report
from ptune.catalog import get_task
from ptune.config import Params
from ptune.data import load_split
from ptune.errors import ConfigError
from ptune.evaluate import EvalResult, evaluate
from ptune.models import BaseModel
from ptune.paths import validation_dir
from tasks.policies import retry_on
from tasks.training import Trained

REGISTRY_TASK = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": retry_on(),
                 "cache_policy": NO_CACHE, "persist_result": False}


@task(**REGISTRY_TASK)
def register_prompt(trained: Trained, params: Params, tuned: EvalResult, baselines: Mapping[str, EvalResult],
                    written: report.ReportPaths) -> registry.RegisteredPrompt:
    """Record test + baseline metrics in prompt.json, close the MLflow run with the report and the validation
    results attached, and register the prompt as a new version of `ptune-<task>`."""
    spec = get_task(trained.task, params)
    prompt, meta = artifacts.load_prompt(trained.prompt_dir)
    metrics = {**meta.metrics, **tuned.metrics, **registry.baseline_metrics(baselines)}
    artifacts.save_prompt(trained.prompt_dir, prompt, dataclasses.replace(meta, metrics=metrics))
    run_id = trained.run.finish(trained.prompt_dir, tuned.metrics, baselines,
                                report_files=[written.markdown, written.metrics, written.chart],
                                predictions=written.predictions, validation_dir=validation_dir(spec.name))
    return registry.register_prompt(spec.name, trained.prompt_dir, run_id, primary_metric=f"test/{spec.metrics[0]}")


def same_base_evaluator(base: BaseModel, params: Params) -> promotion.Evaluator:
    """Re-evaluate a registered version on the current split with the base model already loaded and the same
    example cap as the candidate (a fair comparison); a version trained on another base loads its own."""

    def evaluate_version(task_name: str, version: str, split: str) -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            prompt_dir = registry.download_prompt(task_name, Path(tmp) / "prompt", alias=None, version=version)
            prompt, meta = artifacts.load_prompt(prompt_dir)
        if meta.base_fingerprint != base.fingerprint:
            return promotion.evaluate_version(task_name, version, split)
        result = evaluate(base, get_task(task_name, params), load_split(task_name, split), prompt, split=split,
                          batch_size=params.evaluate.batch_size, max_examples=params.evaluate.max_examples or None,
                          progress=False)
        return dict(result.metrics)

    return evaluate_version


@task(**REGISTRY_TASK)
def promote_if_better(base: BaseModel, task_name: str, version: str, params: Params) -> promotion.Decision:
    """Move @champion to `version` only if it beats the best baseline by min_gain and the current champion."""
    return promotion.promote_if_better(task_name, version, params.promote.min_gain,
                                       evaluator=same_base_evaluator(base, params))


@task(**REGISTRY_TASK)
def latest_version(task_name: str) -> str:
    """The highest version number of `ptune-<task>` (RegistryError when none is registered)."""
    name = registry.model_name(task_name)
    with registry.guard(f"version lookup of {name}"):
        versions = [int(v.version) for v in registry.client().search_model_versions(f"name='{name}'")]
    if not versions:
        raise ConfigError(f"{name} has no registered version yet: run train_task_flow first")
    return str(max(versions))
