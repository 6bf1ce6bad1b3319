"""`ptune sources`: every pinned model and data file, where it comes from, and whether it can be had now."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ptune.config import project_params


def sources_cmd(
    params: Annotated[Path | None, typer.Option("--params", help="params file naming the defaults "
                                                "(model, run_tasks).")] = None,
    no_index: Annotated[bool, typer.Option("--no-index", help="Do not ask the index; report the cache only.")] = False,
) -> None:
    """Table of pinned files (model weights, datasets): used by, default, listed on the index now, cached,
    size, licence. Exits 1 when a file that a default task or the default model needs can be had neither
    from the cache nor from the index (CI can run it)."""
    from ptune.packages import remedies
    from ptune.pipeline.inventory import render, source_rows

    rows = source_rows(project_params(params, must_exist=params is not None), ask_index=not no_index)
    typer.echo(render(rows))
    missing = [r for r in rows if r.default and not r.available and not (no_index and r.cached == "no")]
    for row in missing:
        typer.echo(f"error: {row.pin.filename} ({', '.join(row.used_by)}) is unavailable: listed "
                   f"{row.listed}, cached {row.cached}; {remedies(row.pin)}", err=True)
    if missing:
        raise typer.Exit(1)
