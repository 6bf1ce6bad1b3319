"""`ptune similar TASK`: other tasks' champion prompts ranked as transfer sources for TASK (SPoT)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def similar_cmd(
    task: Annotated[str, typer.Argument(help="Target task name (see `ptune tasks`).")],
    proxy: Annotated[bool, typer.Option("--proxy", help="Also score each source prompt on TASK's validation "
                                                        "split, no training, and rank by that.")] = False,
    params: Annotated[Path, typer.Option("--params", help="params.yaml to read.")] = Path("params.yaml"),
) -> None:
    """Rank other tasks' @champion prompts by cosine similarity of the mean-pooled prompt with TASK's prompt."""
    from ptune.config import project_params
    from ptune.pipeline import stages
    from ptune.studies import transfer

    run = stages.TaskRun.build(task, project_params(params))
    base = stages.load_base(run)
    _, origin = transfer.target_prompt(run, base)
    found = transfer.similar(run, base, proxy=proxy)
    typer.echo(f"target {task}: {origin}")
    if not found:
        typer.echo("no other task has a @champion prompt trained on this base model")
    metric = f"validation/{run.spec.metrics[0]}"
    for rank, src in enumerate(found, 1):
        score = f"  {metric} {src.proxy:.4f}" if src.proxy is not None else ""
        typer.echo(f"{rank:2}. {src.task:24} v{src.version:<4} cosine {src.cosine:+.4f}  n_tokens {src.n_tokens}{score}")
