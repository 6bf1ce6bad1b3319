"""Precision policy: `auto | fp32 | bf16` for training and evaluation (params.yaml `train.precision`,
`evaluate.precision`).

bf16 here is autocast: matmuls run in bfloat16 where the hardware has bf16 units, while the soft prompt and
its optimizer state stay fp32. The frozen linear weights are held in bf16 (`hold_matmul_weights`, params.yaml
`model_dtype: auto`), which gives autocast's numbers bit for bit; embeddings and norms stay fp32, so the
residual stream does too (docs/training.md says why: a bf16 residual stream destabilised training). `auto` picks bf16 on CUDA
devices that support it and on CPUs with AMX or AVX-512 BF16 units, detected at run time, for models of
at least BF16_MIN_PARAMS parameters: on a tiny model the casts cost more than the matmuls save (a 28k-
parameter Llama ran a forward pass 0.70x as fast under bf16 autocast on this 2-core AMX CPU).
"""

from __future__ import annotations

import contextlib
import functools

import torch

from ptune.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
BF16_MIN_PARAMS = 20_000_000  # `auto` keeps smaller models in fp32


@functools.cache
def cpu_bf16_units() -> tuple[str, ...]:
    """The CPU's bf16 matmul units torch can use: "amx" and/or "avx512_bf16" (empty: none)."""
    units = []
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        units.append("amx")
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        units.append("avx512_bf16")
    return tuple(units)


def bf16_support(device: torch.device) -> str:
    """A short description of bf16 support on `device`; starts with "yes" when autocast should use it."""
    if device.type == "cuda":
        return "yes (CUDA)" if torch.cuda.is_bf16_supported() else "no (this CUDA device lacks bf16)"
    if device.type == "cpu":
        units = cpu_bf16_units()
        return f"yes (CPU: {', '.join(units)})" if units else "no (CPU without AMX or AVX-512 BF16)"
    return f"no ({device.type})"


def autocast_dtype(policy: str, device: torch.device, n_params: int, where: str = "precision") -> torch.dtype | None:
    """torch.bfloat16 when `policy` asks for bf16 (or `auto` finds bf16 units and a model of `n_params`
    >= BF16_MIN_PARAMS), None for fp32.

    An explicit `bf16` where autocast cannot run it (a CUDA device without bf16, a device other than CPU
    or CUDA) is a ConfigError naming `where` (e.g. "train.precision"), not a silent fallback. On a CPU
    without bf16 units it runs, emulated and slow, because the user asked for it."""
    if policy not in PRECISIONS:
        raise ConfigError(f"{where} = {policy!r}: allowed values are {', '.join(PRECISIONS)}")
    support = bf16_support(device)
    if policy == "fp32" or (policy == "auto" and (not support.startswith("yes") or n_params < BF16_MIN_PARAMS)):
        return None
    if policy == "bf16" and device.type != "cpu" and not support.startswith("yes"):
        raise ConfigError(f"{where} = 'bf16': bf16 autocast is not available on {device}: {support}")
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """`torch.autocast` on `device` in `dtype`, or nothing for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@contextlib.contextmanager
def training_attention(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None):
    """Eager attention for a training step under bf16 autocast on CPU, where the model uses SDPA.

    On this AMX CPU the backward of torch's CPU flash attention took 30% of a SmolLM2 train step (batch 8 x 84
    tokens, bf16 autocast), more than all the matmuls together; the eager (matmul + softmax) attention made
    the step about 1.35x faster in CPU time and was no slower at 4 x 512 tokens (docs/training.md). fp32 steps
    and CUDA keep SDPA. The model's own setting is restored on exit, so evaluation keeps SDPA."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = (device.type == "cpu" and dtype == torch.bfloat16 and before == "sdpa"
              and hasattr(model, "set_attn_implementation"))
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)


@contextlib.contextmanager
def inference_precision(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None):
    """Inference (evaluation, baselines, validation) in `dtype`: autocast, and on CPU in bf16 the frozen weights
    held in bf16 for the block (`frozen_weights_in`). Nothing for fp32.

    Autocast alone casts every fp32 weight to bf16 again at every matmul: in greedy decoding, where each step
    is a few rows, that re-cast was most of the step. Casting the frozen weights once per block made
    rank scoring and decoding faster on this AMX CPU (docs/evaluation.md). Trainable parameters (a LoRA
    adapter) stay fp32 and autocast covers them. Training steps keep fp32 weights (docs/training.md)."""
    if dtype is None:
        yield
        return
    with contextlib.ExitStack() as stack:
        if device.type == "cpu" and dtype == torch.bfloat16:
            stack.enter_context(frozen_weights_in(model, dtype))
        stack.enter_context(torch.autocast(device.type, dtype=dtype))
        yield


@contextlib.contextmanager
def frozen_weights_in(model: torch.nn.Module, dtype: torch.dtype):
    """The model's frozen floating-point parameters held in `dtype` for the block; on exit each gets its own
    tensor back, bit for bit (even when the block raises). Peak memory: the originals plus the copies.
    Nested blocks leave the weights to the outermost one. Not for two threads on one model at once.
    (A bf16 output layer needs a contiguous input to be fast: `contiguous_head_input`, set at load.)"""
    saved: dict[torch.nn.Parameter, torch.Tensor] = {}
    try:
        for param in model.parameters():  # tied weights come once
            if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
                saved[param] = param.data
                param.data = param.data.to(dtype)
        yield
    finally:
        for param, data in saved.items():
            param.data = data


def hold_for_inference(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> int:
    """For a model that only runs inference in `dtype` from now on (a server, the pyfunc): what `inference_precision`
    would cast for each block, cast once and for good. On CPU in bf16, every frozen floating-point parameter goes
    to bf16, so no later block casts a weight; nothing otherwise. Returns the number of values cast."""
    if dtype != torch.bfloat16 or device.type != "cpu":
        return 0
    cast = [p for p in model.parameters() if not p.requires_grad and p.is_floating_point() and p.dtype != dtype]
    with torch.no_grad():
        for param in cast:
            param.data = param.data.to(dtype)
    return sum(p.numel() for p in cast)


def hold_matmul_weights(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Hold the frozen weights and biases of the model's `nn.Linear` layers in `dtype` for good; embeddings, a
    tied output layer, norms and buffers keep theirs. Returns the number of values cast.

    Under `dtype` autocast this computes what autocast over fp32 weights computes, bit for bit: autocast casts
    each linear's fp32 weight to `dtype` at every call, with the same rounding, and the residual stream, the
    embeddings and the soft prompt stay fp32 (tests/ptune/model/test_precision.py). What goes is the cost: the
    re-cast at every matmul and the fp32 copy in memory (docs/training.md, "Linear weights held in bf16").
    The parameters left as they were get their own memory, so the checkpoint's buffer (often one file mapping
    for every tensor, which a single fp32 view would keep resident) can go."""
    others = {id(p) for m in model.modules() if not isinstance(m, torch.nn.Linear) for p in m.parameters(recurse=False)}
    linear = [p for m in model.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters(recurse=False)
              if id(p) not in others]  # a weight tied to the embeddings stays as it is
    cast = {id(p): p for p in linear if not p.requires_grad and p.is_floating_point() and p.dtype != dtype}
    with torch.no_grad():
        for param in cast.values():
            param.data = param.data.to(dtype)
        for param in model.parameters() if cast else ():
            if id(param) not in cast:
                param.data = param.data.clone()
    return sum(p.numel() for p in cast.values())


def auto_hold(model: torch.nn.Module, device: torch.device, n_params: int, policies: dict[str, str]) -> int:
    """`model_dtype: auto`: `hold_matmul_weights` in bf16 when every precision policy in `policies` ({"train.precision":
    "auto", ...}) resolves to bf16 autocast on `device`, else nothing (a pass in fp32 needs the fp32 weights).
    Returns the number of values cast."""
    amps = {autocast_dtype(policy, device, n_params, where) for where, policy in policies.items()}
    return hold_matmul_weights(model, torch.bfloat16) if amps == {torch.bfloat16} else 0


def held_dtypes(model: torch.nn.Module) -> str:
    """The dtypes the parameters are held in, largest share first: "float32" or "bfloat16 106.2M, float32 28.4M"."""
    counts: dict[str, int] = {}
    for param in model.parameters():
        name = str(param.dtype).removeprefix("torch.")
        counts[name] = counts.get(name, 0) + param.numel()
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def contiguous_head_input(model: torch.nn.Module) -> None:
    """Give the output layer a contiguous input, once per model.

    `logits_to_keep=1` (rank scoring, every decode step) hands the output layer a strided last-position slice.
    With bf16 weights (`model_dtype: bf16`, or evaluation's `frozen_weights_in`) torch ran that linear as a
    batched matmul over a copied 49k x 576 weight per row: rank scoring of 200 rotten_tomatoes rows took
    26 s instead of 4 s. A contiguous copy of a (B, 1, d) slice costs nothing; a contiguous input is passed
    through as it is."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(head, torch.nn.Module) and not getattr(head, "_ptune_contiguous_input", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._ptune_contiguous_input = True


def _contiguous_input(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:]) if args and isinstance(args[0], torch.Tensor) else args
