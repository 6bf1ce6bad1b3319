"""`ptune reference TASK --method lora|full|multitask`: the reference model a soft prompt is measured against."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer


def reference_cmd(
    task: Annotated[str, typer.Argument(help="Task name (see `ptune tasks`); it must be prepared.")],
    method: Annotated[str, typer.Option("--method", help="lora (r 8 on q/v) | full (all weights) | multitask "
                                                         "(all weights, on a mixture of tasks).")],
    steps: Annotated[int | None, typer.Option("--steps", help="Steps at most (default train.max_steps).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Rows per step (default train.batch_size).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="AdamW lr (default 1e-3 lora, 1e-5 full/multitask).")] = None,
    mix: Annotated[str | None, typer.Option("--mix", help="multitask: comma-separated tasks mixed with TASK "
                                                          "(default run_tasks).")] = None,
    params: Annotated[Path | None, typer.Option("--params", help="params file to read (default params.yaml).")] = None,
) -> None:
    """Train a reference model on TASK (same data, scoring, steps and batch size as prompt tuning), keep the best
    on validation, score it once on test; MLflow run tagged ptune.kind=reference (never registered) and
    outputs/TASK/reference/METHOD.json, which `ptune report TASK` shows with the gap the prompt closes."""
    from ptune.config import project_params
    from ptune.pipeline import stages
    from ptune.studies import reference

    project = project_params(params, must_exist=params is not None)
    run = stages.TaskRun.build(task, project, source="--steps")
    cfg = reference.ReferenceConfig.for_run(run, method, steps=steps, batch_size=batch_size, lr=lr)
    names = [t.strip() for t in mix.split(",") if t.strip()] if mix else None
    others = reference.mix_runs(run, project, method, names)
    reference.check_prepared([run, *others])
    done = reference.run_reference(run, stages.load_base(run), cfg, mix=others,
                                   command=shlex.join(["ptune", *sys.argv[1:]]))
    typer.echo(json.dumps({"reference": str(done.path), "mlflow_run": done.run_id, "best_step": done.best_step,
                           "steps": done.steps, "seconds": round(done.seconds, 1), "trainable_params": done.trainable,
                           "mixture": done.mixture, **done.metrics}, indent=2))
