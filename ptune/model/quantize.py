"""Quantized frozen base (params.yaml `model_quantize: none | int8 | nf4`) and big-model placement (`model_device_map`).

The linear layers' weights are held quantized by bitsandbytes, on CUDA and on CPU (its CPU backend, checked on 0.50): int8 is
LLM.int8 (8-bit weights, one scale per row), nf4 is 4-bit NormalFloat in blocks of 64 computing in the held dtype.
Embeddings, norms, a tied output layer and the soft prompt stay floating point, so the prompt's gradient flows back
through the dequantized matmuls and the fingerprint (config + input embeddings) equals the unquantized model's.
Why bitsandbytes on CPU as well as CUDA, with what was tried: docs/design.md ("Quantized base").
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Mapping
from typing import Any

import torch

from ptune.errors import ModelError

log = logging.getLogger(__name__)

QUANTIZE_MODES = ("none", "int8", "nf4")
DEVICE_MAPS = ("none", "auto", "balanced", "balanced_low_0", "sequential")  # or a {module: device} mapping
BITSANDBYTES_PIN = "bitsandbytes==0.50.2"  # the pyproject.toml pin
_CPU_SINCE = (0, 50)  # CPU int8 + nf4 checked on 0.50.2 (docs/design.md); earlier releases are refused on CPU


def quantization_config(mode: str, device: torch.device, compute_dtype: torch.dtype = torch.float32) -> Any | None:
    """The transformers `BitsAndBytesConfig` for `mode` on `device` (None for "none"); ModelError, one line naming the
    remedy, where the mode cannot run there (bitsandbytes missing or too old, a device other than cuda or cpu)."""
    if mode not in QUANTIZE_MODES:
        raise ModelError(f"model_quantize = {mode!r}: allowed values are {', '.join(QUANTIZE_MODES)}")
    if mode == "none":
        return None
    if device.type not in ("cuda", "cpu"):
        raise ModelError(f"model_quantize = {mode!r} runs on cuda or cpu (bitsandbytes), not on {device}; "
                         f"use model_quantize: none there")
    _require_bitsandbytes(mode, device)
    from transformers import BitsAndBytesConfig

    if mode == "int8":  # LLM.int8 casts fp32 activations to fp16 for its int8 matmul: said here once, not at every call
        logging.getLogger("bitsandbytes.autograd._functions").addFilter(_quiet_cast)
        log.info("model_quantize int8: bitsandbytes computes the int8 matmuls from fp16 activations")
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)


def _quiet_cast(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")


def _require_bitsandbytes(mode: str, device: torch.device) -> None:
    try:
        version = importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"model_quantize = {mode!r} needs bitsandbytes, which is not installed: "
                         f"pip install {BITSANDBYTES_PIN}") from None
    release = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if device.type == "cpu" and release < _CPU_SINCE:
        raise ModelError(f"model_quantize = {mode!r} on cpu needs bitsandbytes >= {'.'.join(map(str, _CPU_SINCE))} "
                         f"(its CPU backend), found {version}: pip install {BITSANDBYTES_PIN}")


def placement(device_map: Any, device: torch.device, quantized: bool) -> dict[str, Any]:
    """`from_pretrained` keyword arguments placing the weights: nothing for `none` on an unquantized model (it is moved
    to `device` after the load, as always), the whole model on `device` for a quantized one (bitsandbytes places it
    while loading), else accelerate's `device_map` (a strategy name or a {module: device} mapping, checked here)."""
    if device_map in (None, "none"):
        return {"device_map": {"": str(device)}} if quantized else {}
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAPS:
            raise ModelError(f"model_device_map = {device_map!r}: allowed values are {', '.join(DEVICE_MAPS)} "
                             f"or a mapping {{module: device}}")
        return {"device_map": device_map}
    if not isinstance(device_map, Mapping) or not device_map:
        raise ModelError(f"model_device_map = {device_map!r}: give a strategy ({', '.join(DEVICE_MAPS)}) "
                         f"or a non-empty mapping {{module: device}}")
    return {"device_map": {str(module): _visible(module, where) for module, where in device_map.items()}}


def _visible(module: str, where: Any) -> str | int:
    """A mapping's device, checked to exist here ("cpu", "disk", "cuda:N" / N with N < the visible GPU count)."""
    if where in ("cpu", "disk"):
        return where
    try:
        dev = torch.device(f"cuda:{where}" if isinstance(where, int) else str(where))
    except RuntimeError:
        dev = None
    visible = torch.cuda.device_count()
    if dev is None or dev.type != "cuda" or (dev.index or 0) >= visible:
        raise ModelError(f"model_device_map: module {module!r} -> {where!r} is not a visible device "
                         f"(cpu, disk, or cuda:0..cuda:{visible - 1})" if visible else
                         f"model_device_map: module {module!r} -> {where!r} is not a visible device "
                         f"(no CUDA device here: use cpu)")
    return str(dev) if dev.index is not None else "cuda:0"


def check_modules(model: torch.nn.Module, device_map: Any) -> None:
    """Every module a {module: device} mapping names exists in `model` ("" is the whole model)."""
    if not isinstance(device_map, Mapping):
        return
    names = {name for name, _ in model.named_modules()}
    missing = sorted(str(m) for m in device_map if m != "" and m not in names)
    if missing:
        raise ModelError(f"model_device_map names modules the model does not have: {', '.join(missing)} "
                         f"(e.g. {', '.join(sorted(n for n in names if n.count('.') <= 1 and n)[:4])})")


def quantized_mode(model: torch.nn.Module) -> str:
    """"int8", "nf4" (or "fp4") when bitsandbytes holds the model's linear weights, else "none"."""
    config = getattr(model, "quantization_config", None) or getattr(model.config, "quantization_config", None)
    if config is None:
        return "none"
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    if get("load_in_8bit", False):
        return "int8"
    if get("load_in_4bit", False):
        return str(get("bnb_4bit_quant_type", "nf4"))
    return str(get("quant_method", "none"))


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes the model's parameters and buffers hold, as stored (int8 / packed 4-bit included; tied ones once),
    plus bitsandbytes' quantization state (absmax, scales) kept beside the 4-bit weights."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    for param in model.parameters():
        state, scales = getattr(param, "quant_state", None), getattr(param, "SCB", None)  # nf4; int8 row scales
        extra = (_state_tensors(state) if state is not None else []) + ([scales] if isinstance(scales, torch.Tensor) else [])
        total += sum(t.numel() * t.element_size() for t in extra)
    return total


def _state_tensors(state: Any) -> list[torch.Tensor]:
    out = [getattr(state, k) for k in ("absmax", "code") if isinstance(getattr(state, k, None), torch.Tensor)]
    nested = getattr(state, "state2", None)
    return out + (_state_tensors(nested) if nested is not None else [])
