"""`ptune model-info`: load a base model (converting a built-in once) and print its identity."""

from __future__ import annotations

from typing import Annotated

import typer


def model_info(
    spec: Annotated[str, typer.Argument(help="Built-in name (smollm2-135m, gemma3-270m), local directory, or hub id.")] = "smollm2-135m",
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if available).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: $PTUNE_THREADS, else by model size).")] = None,
    model_dtype: Annotated[str, typer.Option(help="Hold the weights as params.yaml's model_dtype: auto, fp32, bf16.")] = "auto",
) -> None:
    """Load a base model (converting a built-in once), print its identity; gemma3-270m unaccepted: metadata only."""
    from ptune.model.base import describe

    for key, value in describe(spec, device=device, threads=threads, model_dtype=model_dtype).items():
        typer.echo(f"{key}: {value}")


COMMANDS = {"model-info": model_info}
