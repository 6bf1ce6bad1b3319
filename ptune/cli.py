"""The `ptune` command line. Each command is a thin wrapper over one library function.

Errors from the library (`PtuneError`) are printed as one `error: ...` line with exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ptune.errors import PtuneError

app = typer.Typer(help="Prompt tuning (soft prompts) on frozen Hugging Face models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read (model, tasks, train/evaluate settings).")]


# ---- commands are added below this line, one short function each ----


def main() -> None:
    """Console-script entry point: run the app, turning library errors into one clear line."""
    try:
        app()
    except PtuneError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
