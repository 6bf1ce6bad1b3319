"""`ptune sweep TASK --budget-minutes N`: the Optuna search of ptune.studies.sweep, from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ptune.config import project_params


def sweep_cmd(
    task: Annotated[str, typer.Argument(help="Task name (see `ptune tasks`).")],
    budget_minutes: Annotated[float, typer.Option("--budget-minutes", min=0.0,
                                                  help="Stop starting trials after this many minutes.")] = 30.0,
    trials: Annotated[int | None, typer.Option("--trials", min=1, help="At most this many trials in this call.")] = None,
    seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
    params: Annotated[Path, typer.Option("--params", help="params.yaml to read.")] = Path("params.yaml"),
    storage: Annotated[str | None, typer.Option(
        "--storage", help="Optuna storage: postgresql://user@host:port/db lets sweeps on several machines join one "
        "study (password from ~/.pgpass or PGPASSWORD). Default: $PTUNE_OPTUNA_STORAGE, else optuna.db beside "
        "the MLflow store.")] = None,
) -> None:
    """Search lr, n_tokens, init, reparam and max_steps for TASK on its validation split (Optuna TPE, median
    pruning); every trial is an MLflow child run of one sweep run. Writes sweeps/TASK.yaml; resumes after a kill.
    Run it on several machines with one PostgreSQL --storage and they share the study and the sweep run."""
    from ptune.pipeline import stages
    from ptune.studies.sweep import run_sweep

    run = stages.TaskRun.build(task, project_params(params))
    result = run_sweep(run, budget_minutes=budget_minutes, n_trials=trials, seed=seed, storage=storage)
    typer.echo(json.dumps({"study": result.study, "storage": result.storage, "mlflow_parent_run": result.parent_run_id,
                           "trials": result.counts, "metric": result.metric, "best_value": result.best_value,
                           "best_train": result.best_train, "file": str(result.file) if result.file else None},
                          indent=2))
