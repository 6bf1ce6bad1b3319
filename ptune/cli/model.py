"""`ptune model-info`: load a base model (converting a built-in once) and print its identity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ptune.cli.options import ParamsOpt


def model_info(
    spec: Annotated[str, typer.Argument(help="Built-in name (smollm2-135m, gemma3-270m), local directory, or hub id.")] = "smollm2-135m",
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if available).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: $PTUNE_THREADS, else by model size).")] = None,
    model_dtype: Annotated[str, typer.Option(help="Hold the weights as params.yaml's model_dtype: auto, fp32, bf16.")] = "auto",
    quantize: Annotated[str, typer.Option(help="Hold the linear weights as params.yaml's model_quantize: none, int8, nf4.")] = "none",
    device_map: Annotated[str, typer.Option(help="Place the layers as params.yaml's model_device_map: none, auto, balanced, "
                                            "balanced_low_0, sequential, or a JSON mapping {\"module\": \"device\"}.")] = "none",
    gpu_memory: Annotated[str | None, typer.Option(help="Per-GPU memory, e.g. 24GB (read as GiB): estimate train and eval peaks from the config, load no weights.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="With --gpu-memory: text tokens per row (default 272: max_source_tokens 256 + 16 targets).")] = None,
    params: ParamsOpt = None,
) -> None:
    """Load a base model (converting a built-in once), print its identity; gemma3-270m unaccepted: metadata only.
    With --gpu-memory: the memory estimate at params.yaml's settings instead (ptune.model.memory)."""
    if gpu_memory is not None:
        return memory_info(spec, gpu_memory, seq_len, params)
    from ptune.model.base import describe

    placed = json.loads(device_map) if device_map.lstrip().startswith("{") else device_map
    for key, value in describe(spec, device=device, threads=threads, model_dtype=model_dtype, quantize=quantize,
                               device_map=placed).items():
        typer.echo(f"{key}: {value}")


def memory_info(spec: str, gpu_memory: str, seq_len: int | None, params_file: Path | None) -> None:
    """Print the estimated train and eval peaks per quantize mode on one GPU of `gpu_memory`, and which fits."""
    from transformers import AutoConfig

    from ptune.config import project_params
    from ptune.model.base import resolve_spec
    from ptune.model.memory import fits, human, parse_size, peaks, settings_for, shape_of

    budget = parse_size(gpu_memory)
    train, evaluate = settings_for(project_params(params_file, must_exist=params_file is not None), seq_len)
    shape = shape_of(AutoConfig.from_pretrained(resolve_spec(spec) or spec))  # the config only
    typer.echo(f"model: {spec} ({shape.n_params:,} parameters; estimated from its config, no weights loaded)")
    typer.echo(f"budget: {human(budget)} per GPU ({budget:,} bytes; GB and MB are read as GiB and MiB)")
    typer.echo(f"train: batch {train.batch_size} x ({train.n_tokens} prompt + {train.seq_len} text) tokens, "
               f"{train.precision}, weights {train.held}, {train.optimizer}; eval: batch {evaluate.batch_size}, "
               f"{evaluate.precision}")
    typer.echo("| quantize | weights | train peak | eval peak | fits |\n|---|---|---|---|---|")
    for q, (t, e) in peaks(shape, train, evaluate).items():
        ok = "yes" if max(t.total, e.total) <= budget else "no"
        typer.echo(f"| {q} | {human(t.weights)} | {human(t.total)} | {human(e.total)} | {ok} |")
    typer.echo(fits(shape, train, evaluate, budget).line)


COMMANDS = {"model-info": model_info}
