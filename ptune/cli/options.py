"""Arguments and options shared by the command groups, and the TaskRun every task command starts from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ptune.config import project_params

if TYPE_CHECKING:
    from ptune.pipeline import stages


ParamsOpt = Annotated[Path | None, typer.Option("--params", help="params file to read (default params.yaml, optional); a named file must exist.")]
TaskArg = Annotated[str, typer.Argument(help="Task name (see `ptune tasks`).")]
PromptOpt = Annotated[Path | None, typer.Option("--prompt", help="Prompt artifact dir (default outputs/TASK/prompt).")]
SplitOpt = Annotated[str, typer.Option(help="Split to score.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Use a prompt trained for another task.")]
BaseOpt = Annotated[str | None, typer.Option("--base", help="Base model to load the prompt with (default: params.yaml model, or for pull the version's base_model tag); prompt.json must name it.")]


def build_run(task: str, params: Path | None, **overrides: object) -> stages.TaskRun:
    """The task resolved once from --params (library defaults when the file does not exist)."""
    from ptune.pipeline import stages

    return stages.TaskRun.build(task, project_params(params, must_exist=params is not None), source="--steps", **overrides)
