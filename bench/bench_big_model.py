"""A larger model: ptune's prompt-tuning train step and memory, weights in bf16 vs in nf4, and ptune vs PEFT.

The model is a Llama in TinyLlama-1.1B's shape (hidden 2048, intermediate 5632, 22 layers, 32/4 heads, vocab 32,000)
with random weights, saved with save_pretrained (safetensors) and the tests' tiny tokenizer in a temp dir, then loaded
as ptune loads a user's model: `load_base_model(dir, device="cuda", dtype="bfloat16")` and the same with
`quantize="nf4"` (bitsandbytes). Per variant: load seconds, weight memory, the median seconds of a train step
(bf16 autocast, batch 8 x 128 + 20 prompt tokens) for ptune and for PEFT's PromptTuning on the same loaded module,
and the steps' peak GPU memory (torch.cuda.max_memory_allocated). Speed and memory depend on the shape, not the
values, so they carry over to the real model (say so when quoting). A variant that cannot run here (bitsandbytes
not installed, a load_base_model without `quantize`) is recorded with its reason and the others go on.
--cpu: a tiny shape on the CPU, fp32 vs int8 vs nf4 (bitsandbytes' CPU backend; tests the script).
Usage: python bench/bench_big_model.py [--reps 10] [--out PATH] [--cpu]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_gpu import SMALL, median_times, steps, tiny_tokenizer  # noqa: E402

from ptune.model.base import load_base_model  # noqa: E402

TINYLLAMA = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False)
BATCH, TOKENS = 8, 128
MIB = 2**20


def save_random(shape: dict, device: torch.device, path: Path) -> Path:
    """A random-weight Llama of `shape`, built on `device` (fast on a GPU) and saved in bf16 with a tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with device:
        model = LlamaForCausalLM(LlamaConfig(**shape)).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    tiny_tokenizer().save_pretrained(path)
    del model
    return path


def why_not(quantize: str, device: torch.device) -> str | None:
    """The reason `quantize` cannot run here, or None."""
    if quantize == "none":
        return None
    if "quantize" not in inspect.signature(load_base_model).parameters:
        return "skipped: this ptune's load_base_model takes no quantize= argument"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "skipped: bitsandbytes not installed"
    return None


def variant(path: Path, device: torch.device, quantize: str, reps: int) -> dict:
    """Load `path` with `quantize` (weights in bf16 on a GPU, fp32 on the CPU) and time ptune's and PEFT's steps."""
    reason = why_not(quantize, device)
    if reason:
        return {"quantize": quantize, "skipped": reason}
    cuda = device.type == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    kwargs = {"quantize": quantize} if quantize != "none" else {}
    base = load_base_model(str(path), device=str(device), threads=None if cuda else 1,
                           dtype="bfloat16" if cuda else None, **kwargs)
    load_s, weights = time.perf_counter() - start, torch.cuda.memory_allocated() if cuda else 0
    ids = torch.randint(10, base.model.config.vocab_size, (BATCH, TOKENS), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    made = steps(base, batch, device)
    runs = {"ptune": made["train_bf16"]} | ({"peft": made["peft_bf16"]} if callable(made["peft_bf16"]) else {})
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    med = median_times(runs, reps, device)
    out = {"quantize": quantize, "params": base.n_params, "load_s": load_s,
           "weights_mib": weights / MIB if cuda else None,
           "param_mib": sum(p.numel() * p.element_size() for p in base.model.parameters()) / MIB,
           "peak_mib": torch.cuda.max_memory_allocated() / MIB if cuda else None, "median_s": med,
           "ptune_over_peft": med["ptune"] / med["peft"] if "peft" in med else None,
           "dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in base.model.parameters()})}
    if not callable(made["peft_bf16"]):
        out["peft"] = made["peft_bf16"]
    del base, made, runs, batch
    gc.collect()
    return out


def safely(path: Path, device: torch.device, quantize: str, reps: int) -> dict:
    """`variant`, with a failure recorded (type and message) instead of raised: the other variant still runs."""
    try:
        return variant(path, device, quantize, reps)
    except Exception as exc:  # noqa: BLE001 - the JSON says what failed; the check goes on
        return {"quantize": quantize, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}


def ratios(found: dict) -> dict:
    """`<quantized>_over_<plain>_step` and `..._peak_memory` (None where either side did not run)."""
    (plain_name, plain), *quantized = found.items()
    out = {}
    for name, quant in quantized:
        both = "median_s" in plain and "median_s" in quant
        out[f"{name}_over_{plain_name}_step"] = \
            quant["median_s"]["ptune"] / plain["median_s"]["ptune"] if both else None
        out[f"{name}_over_{plain_name}_peak_memory"] = quant["peak_mib"] / plain["peak_mib"] \
            if both and plain["peak_mib"] else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_big_model.json"))
    parser.add_argument("--cpu", action="store_true",
                        help="tiny shape on the CPU, fp32 vs int8 vs nf4 (tests the script)")
    args = parser.parse_args()
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    cuda = device.type == "cuda"
    shape, names = (TINYLLAMA, {"bf16": "none", "nf4": "nf4"}) if cuda else \
        (SMALL, {"fp32": "none", "int8": "int8", "nf4": "nf4"})
    with tempfile.TemporaryDirectory(prefix="ptune-big-") as tmp:
        start = time.perf_counter()
        path = save_random(shape, device, Path(tmp) / "model")
        built_s = time.perf_counter() - start
        found = {name: safely(path, device, quantize, args.reps) for name, quantize in names.items()}
    out = {"device": torch.cuda.get_device_name() if cuda else "cpu",
           "model": f"llama, {'TinyLlama-1.1B' if cuda else 'tiny'} shape (random weights)",
           "batch": [BATCH, TOKENS], "prompt_tokens": 20, "reps": args.reps, "build_and_save_s": built_s,
           "variants": found, **ratios(found)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
