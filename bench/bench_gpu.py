"""GPU throughput of ptune's train step and evaluation forward, fp32 vs bf16, and ptune vs PEFT, side by side.

The model is a Llama with SmolLM2-135M's exact shape (hidden 576, 30 layers, 9/3 heads, vocab 49,152) and
random weights: the GPU machine has no network, and the 517 MB converted SmolLM2 does not travel there.
Speed depends on the shape, not the values, so the FLOP/s and ratios carry over (say so when quoting).
Batch 8 x 64 tokens + a 20-token prompt, interleaved repetitions, CUDA-synchronised medians.
Writes --out (default bench/results/gpu_train_step.json). Runs on CPU too (--cpu, a tiny shape) so the
script itself is tested without a GPU. Usage: python bench/bench_gpu.py [--reps 20] [--out PATH] [--cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ptune.model.base import BaseModel, from_objects  # noqa: E402
from ptune.model.precision import autocast  # noqa: E402
from ptune.model.soft_prompt import SoftPrompt, prompt_inputs, shared_prompt_inputs, target_loss  # noqa: E402

SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True)
SMALL = dict(SMOLLM2, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=512)  # --cpu: tests the script, fast even where bf16 is emulated


def build(shape: dict, device: torch.device) -> BaseModel:
    """A frozen random-weight Llama of `shape` on `device`, with the tests' tiny BPE tokenizer (no BOS, as
    SmolLM2's: the prompt goes first; the ids fed to the model are random, the tokenizer only sets the layout)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**shape)).to(device).eval().requires_grad_(False)
    name = "SmolLM2-135M" if shape == SMOLLM2 else "tiny" if shape == SMALL else "custom"
    return from_objects(model, tiny_tokenizer(), f"llama, {name} shape (random weights)")


def tiny_tokenizer():
    """tests/tiny_models.py's causal tokenizer without its BOS (SmolLM2 adds none, so the prompt goes first)."""
    from tokenizers import processors

    from tests.tiny_models import build_tokenizer

    tok = build_tokenizer("causal")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", special_tokens=[])
    return tok


def steps(base: BaseModel, batch: dict, device: torch.device) -> dict:
    """name -> zero-argument callable running one step; prompt (20, d) trained by Adafactor-free SGD."""
    weight = (torch.randn(20, base.hidden_size, device=device) * 0.05).requires_grad_(True)
    bf16 = torch.bfloat16

    def train(shared: bool, dtype):
        def run() -> None:
            with autocast(device, dtype):
                inputs = shared_prompt_inputs(base, weight, **batch) if shared else \
                    prompt_inputs(base, SoftPrompt(weight)(batch["input_ids"].shape[0]), **batch)
                loss = target_loss(base, inputs)
            loss.backward()
            weight.grad = None
        return run

    def forward(dtype):
        def run() -> None:
            with torch.inference_mode(), autocast(device, dtype):
                base.model(**prompt_inputs(base, weight.detach(), batch["input_ids"], batch["attention_mask"]))
        return run

    return {"train_fp32": train(True, None), "train_bf16": train(True, bf16), "train_plain_bf16": train(False, bf16),
            "forward_fp32": forward(None), "forward_bf16": forward(bf16), "peft_bf16": peft_step(base, batch, device)}


def peft_step(base: BaseModel, batch: dict, device: torch.device):
    """PEFT PromptTuning on the same module, bf16 autocast, same batch; a string saying why when PEFT cannot
    run here (missing, or a version that does not work with the carried transformers)."""
    try:
        from peft import PromptTuningConfig, get_peft_model

        model = get_peft_model(base.model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20))
    except Exception as exc:  # noqa: BLE001 - recorded in the JSON, the ptune numbers still count
        return f"skipped: PEFT did not start ({type(exc).__name__}: {str(exc)[:200]})"

    def run() -> None:
        with autocast(device, torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
    return run


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_times(runs: dict, reps: int, device: torch.device) -> dict[str, float]:
    """name -> median seconds of `runs[name]()` over `reps` interleaved rounds (rotating order), after one warm-up."""
    for fn in runs.values():
        fn()  # warm-up (kernels, autotuning)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for rep in range(reps):
        keys = list(runs)[rep % len(runs):] + list(runs)[:rep % len(runs)]
        for key in keys:
            times[key].append(timed(runs[key], device))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_train_step.json"))
    parser.add_argument("--cpu", action="store_true", help="run on CPU with a 2-layer shape (tests the script)")
    args = parser.parse_args()
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    base = build(SMALL if device.type == "cpu" else SMOLLM2, device)
    ids = torch.randint(10, base.model.config.vocab_size, (8, 64), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    made = steps(base, batch, device)
    notes = {k: v for k, v in made.items() if isinstance(v, str)}
    med = median_times({k: v for k, v in made.items() if callable(v)}, args.reps, device)
    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "model": base.spec,
           "torch": torch.__version__, "batch": [8, 64], "prompt_tokens": 20, "reps": args.reps, "median_s": med,
           "bf16_speedup": med["train_fp32"] / med["train_bf16"],
           "eval_bf16_speedup": med["forward_fp32"] / med["forward_bf16"],
           "shared_prompt_speedup_bf16": med["train_plain_bf16"] / med["train_bf16"],
           "ptune_over_peft_bf16": med["train_bf16"] / med["peft_bf16"] if "peft_bf16" in med else None, **notes}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "median_s"}, indent=2))
    print("medians (ms): " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in med.items()))


if __name__ == "__main__":
    main()
