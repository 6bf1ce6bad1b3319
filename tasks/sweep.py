"""The Optuna sweep of ptune.studies.sweep as a Prefect task: a retry loads the same study and resumes it; with
a shared (PostgreSQL) storage, sweep runs on several workers join that one study."""

from __future__ import annotations

from prefect import task

from ptune.model.base import BaseModel
from ptune.pipeline import stages
from ptune.studies.sweep import SweepResult, run_sweep
from tasks.policies import retry_unless
from tasks.training import MODEL_TASK


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless(), **MODEL_TASK)
def sweep_recipe(run: stages.TaskRun, base: BaseModel, budget_minutes: float, trials: int | None,
                 seed: int, storage: str | None = None) -> SweepResult:
    """Trials until the budget is spent (validation split only); finished trials survive a retry or a kill.
    `storage`: the Optuna storage URL (None: the worker's $PTUNE_OPTUNA_STORAGE, else its local optuna.db)."""
    return run_sweep(run, budget_minutes=budget_minutes, n_trials=trials, seed=seed, base=base, storage=storage)
