"""sweep_flow: search one task's training recipe with Optuna, on its validation split only."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.failure import HOOKS
from flows.params import SweepParams
from flows.prefect_setup import gpu_slot
from ptune.config import project_params
from ptune.pipeline.stages import TaskRun
from ptune.studies.sweep import SweepResult
from tasks.sweep import sweep_recipe
from tasks.training import artifact_key, load_model


def _run_name() -> str:
    form = flow_run.parameters.get("params")
    return f"sweep-{getattr(form, 'task', None) or (form or {}).get('task', '?')}"


@flow(name="sweep", flow_run_name=_run_name, **HOOKS)
def sweep_flow(params: SweepParams, storage: str | None = None) -> dict[str, Any]:
    """Find good training settings for one task; the test split is never read. `storage`: an Optuna storage
    URL without password (postgresql://user@host:port/db); empty: the worker's $PTUNE_OPTUNA_STORAGE (the team
    stack sets it), else its local optuna.db. Sweep runs on several workers with one storage share one study.

    1. Read params.yaml (the form's file); the task's data must be prepared (the `validate` deployment).
    2. Take the GPU slot and load the frozen base model.
    3. Run the sweep: Optuna trials until the budget is spent, each an MLflow child run of one sweep run,
       hopeless ones pruned; a killed sweep resumes from its study (outputs/<task>/sweep checkpoints).
    4. Publish the best settings (sweeps/<task>.yaml) and the trial counts.
    """
    run = TaskRun.build(params.task, project_params(params.params_file), source="form", model=params.model)  # 1
    with gpu_slot():
        base = load_model(run)                                                                               # 2
        result = sweep_recipe(run, base, params.budget_minutes, params.trials, params.seed, storage)         # 3
    summary = {"task": result.task, "study": result.study, "storage": result.storage,                      # 4
               "mlflow_parent_run": result.parent_run_id,
               "trials": result.counts, "metric": result.metric, "best_value": result.best_value,
               "best_train": result.best_train, "file": str(result.file) if result.file else None}
    create_markdown_artifact(sweep_markdown(result), key=artifact_key("sweep", result.task),
                             description=f"ptune sweep of `{result.task}`")
    return summary


def sweep_markdown(result: SweepResult) -> str:
    """The flow's artifact: trial counts, the best validation score and settings, where to find them."""
    counts = ", ".join(f"{n} {state}" for state, n in result.counts.items() if n)
    best = "\n".join(f"| {k} | {v} |" for k, v in result.best_train.items())
    score = f"{result.best_value:.4f}" if result.best_value is not None else "-"
    return "\n".join([
        f"# Sweep of `{result.task}`", "", f"Trials: {counts or 'none'}. Best {result.metric}: **{score}**.", "",
        "| setting | best |", "|---|---|", best, "",
        f"Written to `{result.file}`; include it from params.yaml with "
        f"`task_overrides: {{{result.task}: {{file: sweeps/{result.task}.yaml}}}}`.",
        f"MLflow sweep run `{result.parent_run_id}` (trials are its child runs); Optuna study `{result.study}` "
        f"in `{result.storage}`.",
    ])
