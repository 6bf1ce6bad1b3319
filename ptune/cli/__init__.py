"""The `ptune` command line (and so `dvc repro`): one module per command group, assembled here.

Each command parses its arguments, calls one or a few functions of `ptune.pipeline.stages` (or of a study in
`ptune.studies`) on a `TaskRun`, and prints. Library errors (`PtuneError`) become one line and exit code 1.
Torch, transformers and MLflow are imported inside the commands, so `ptune --help` is quick.

    data       tasks, fetch, dvc-inputs, prepare, validate      run       train, eval, report, predict
    registry   register, promote, pull, export, import-peft     model     model-info
    sources    sources                                          serve     serve
    studies    sweep, reference, similar, interpret (one module each; train --ensemble in ensemble)
"""

from __future__ import annotations

import logging
import sys

import typer

from ptune.cli import data, interpret, model, reference, registry, run, serve, sources, sweep, transfer
from ptune.errors import PtuneError
from ptune.registry.run_status import stop_on_signals

app = typer.Typer(help="Prompt tuning (soft prompts) on frozen Hugging Face models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


@app.command("repro", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def repro_cmd(ctx: typer.Context) -> None:
    """`dvc repro [ARGS]` behind a workspace lock: concurrent runs wait for each other instead of failing."""
    from ptune.pipeline.repro import repro

    raise typer.Exit(repro(ctx.args, echo=lambda msg: typer.echo(msg, err=True)))


for group in (run, data, registry, model):  # in `ptune --help` order
    for name, command in group.COMMANDS.items():
        app.command(name)(command)
app.command("sweep")(sweep.sweep_cmd)
app.command("interpret")(interpret.interpret_cmd)
app.command("similar")(transfer.similar_cmd)
app.command("reference")(reference.reference_cmd)
app.command("serve")(serve.serve_cmd)
app.command("sources")(sources.sources_cmd)


def main() -> None:
    """Console-script entry point: run the app, turning library errors into one clear line. SIGTERM and Ctrl-C
    unwind the stack (an open MLflow run is marked KILLED) and exit with 143 / 130."""
    console_logs()
    try:
        with stop_on_signals():
            app()
    except PtuneError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


def console_logs(stream=None) -> None:
    """Print ptune's INFO lines (training and evaluation progress, what a command is doing) on stderr when it
    is not a terminal (dvc repro, a pipe, a CI log); on a terminal the progress bars say it, and warnings
    still print. Nothing changes where logging is already set up (pytest, a program that embeds the CLI)."""
    stream = stream or sys.stderr
    logger, root = logging.getLogger("ptune"), logging.getLogger()
    if stream.isatty() or logger.handlers or root.handlers:
        return
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(lambda record: not root.handlers)  # once the root logger prints (`ptune serve`), it prints these
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
