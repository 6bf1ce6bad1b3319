"""`ptune serve`: one frozen base model answering every task over HTTP (ptune.serving)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ptune.config import project_params


def serve_cmd(
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks (default: run_tasks of params.yaml).")] = "",
    host: Annotated[str, typer.Option(help="Address to listen on; not loopback = reachable by others (warned).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    alias: Annotated[str, typer.Option(help="Registry alias served and watched for each task.")] = "champion",
    max_batch_size: Annotated[int, typer.Option(help="Rows per model call (dynamic batching).")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="Longest wait of a request for others to batch with.")] = 5.0,
    batching: Annotated[bool, typer.Option(help="Batching across requests (off: one request at a time).")] = True,
    scheduler: Annotated[str, typer.Option(help="continuous: rows join and leave the decode batch at every step; "
                                                "static: whole requests batched until the longest row ends.")]
    = "continuous",
    max_prefill_tokens: Annotated[int, typer.Option(help="continuous: source tokens of new rows started per "
                                                         "decode step (bounds how long a step can take).")] = 512,
    max_inputs: Annotated[int, typer.Option(help="Inputs per request (more: 422).")] = 64,
    max_input_chars: Annotated[int, typer.Option(help="Characters per input (more: 422).")] = 4000,
    max_body_bytes: Annotated[int, typer.Option(help="Request body bytes (more: 413).")] = 1_000_000,
    poll_seconds: Annotated[float, typer.Option(help="Registry poll for alias moves (hot swap); 0 = off.")] = 10.0,
    max_queue: Annotated[int, typer.Option(help="Rows waiting for the model beyond which requests get 503.")] = 1024,
    api_key: Annotated[str | None, typer.Option(envvar="PTUNE_API_KEY", show_default=False,
                                                help="Require `Authorization: Bearer <key>` on every /v1 route "
                                                     "(prefer the PTUNE_API_KEY environment variable).")] = None,
    params: Annotated[Path, typer.Option("--params", help="params.yaml (base model, run_tasks, user tasks).")]
    = Path("params.yaml"),
) -> None:
    """Serve @champion of every task from the MLflow registry: mixed-task batches, hot swap, playground at /."""
    from ptune.serving.server import serve
    from ptune.serving.settings import ServeSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServeSettings(host=host, port=port, alias=alias, max_batch_size=max_batch_size,
                             max_wait_ms=max_wait_ms, batching=batching, scheduler=scheduler,
                             max_prefill_tokens=max_prefill_tokens, max_inputs=max_inputs,
                             max_input_chars=max_input_chars, max_body_bytes=max_body_bytes,
                             poll_seconds=poll_seconds, max_queue=max_queue, api_key=api_key)
    serve(project_params(params), [t.strip() for t in tasks.split(",") if t.strip()], settings)
