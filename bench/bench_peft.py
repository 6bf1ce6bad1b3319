"""Train-step time of ptune's soft prompt vs PEFT's PromptTuning on the same model and batches.

One step = forward + backward + Adafactor step (lr 0.3, no relative step, as in Lester et al.) of a
20-token prompt. Both sides start from the same prompt weights, see the same batches, and run
interleaved (ptune, peft, ptune, ...) so load from other processes hits both alike; medians are
printed with the ratio ptune/peft. Prints only; asserts nothing about speed.
Usage: python bench/bench_peft.py [--reps N] [--batch B] [--tokens T] [--smollm2] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.optimization import Adafactor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ptune.model.base import BaseModel, from_objects  # noqa: E402
from ptune.model.soft_prompt import SoftPrompt, init_prompt, prompt_inputs, shared_prompt_inputs, target_loss  # noqa: E402
from tests.tiny_models import build_causal  # noqa: E402

PROMPT = 20


def make_batches(base: BaseModel, n: int, batch: int, tokens: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """n batches of random non-special token ids (B, T) with loss on the last 3 tokens."""
    gen = torch.Generator().manual_seed(seed)
    vocab = min(len(base.tokenizer), 5000)
    out = []
    for _ in range(n):
        ids = torch.randint(4, vocab, (batch, tokens), generator=gen)  # (B, T)
        labels = torch.full_like(ids, -100)
        labels[:, -3:] = ids[:, -3:]
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def adafactor(params: list[torch.nn.Parameter]) -> Adafactor:
    """Adafactor as in the paper: constant lr 0.3, no parameter scaling, no relative step."""
    return Adafactor(params, lr=0.3, scale_parameter=False, relative_step=False, warmup_init=False)


def ptune_step(base: BaseModel, weight: torch.Tensor, shared: bool = True) -> Callable[[dict[str, torch.Tensor]], float]:
    """A train-step closure for ptune's SoftPrompt: `shared_prompt_inputs` (the prompt's pass once per batch,
    ptune's training path) or, with shared=False, the plain `prompt_inputs`."""
    prompt = SoftPrompt(weight)
    opt = adafactor([prompt.weight])

    def step(batch: dict[str, torch.Tensor]) -> float:
        inputs = shared_prompt_inputs(base, prompt.weight, **batch) if shared else \
            prompt_inputs(base, prompt(batch["input_ids"].shape[0]), **batch)
        loss = target_loss(base, inputs)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def peft_step(base: BaseModel, weight: torch.Tensor) -> Callable[[dict[str, torch.Tensor]], float]:
    """A train-step closure for PEFT's PromptTuning model on the same base module and init."""
    from peft import PromptTuningConfig, get_peft_model

    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=weight.shape[0], prompt_tuning_init="RANDOM")
    model = get_peft_model(base.model, config)
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.copy_(weight)
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == 1, f"expected only the prompt to train, got {len(params)} tensors"
    return model_step(model, adafactor(params))


def model_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> Callable[[dict[str, torch.Tensor]], float]:
    """A train-step closure on a PEFT model's own loss (the full-sequence LM head, as a PEFT user runs it)."""

    def step(batch: dict[str, torch.Tensor]) -> float:
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def lora_step(base: BaseModel, rank: int = 8) -> Callable[[dict[str, torch.Tensor]], float]:
    """LoRA (PEFT, r 8 on q_proj/v_proj, AdamW lr 1e-4): the method a user would pick instead of prompt
    tuning. It runs on a copy of the base module, because LoRA injects its layers into the module it gets."""
    import copy

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(base.model), LoraConfig(task_type="CAUSAL_LM", r=rank, lora_alpha=16,
                                                                  target_modules=["q_proj", "v_proj"]))
    return model_step(model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4))


def compare(name: str, base: BaseModel, reps: int, batch: int, tokens: int) -> None:
    """Time both steps interleaved on identical batches and print medians and ratio."""
    base.model.train(False)  # frozen base: dropout off in both, as in ptune's training
    weight = init_prompt(base, PROMPT, "vocab", seed=0).weight.detach().cpu()  # (P, d)
    steps = {"ptune": ptune_step(base, weight), "peft": peft_step(base, weight)}
    batches = make_batches(base, reps + 1, batch, tokens)
    times: dict[str, list[float]] = {k: [] for k in steps}
    losses: dict[str, list[float]] = {k: [] for k in steps}
    for i, b in enumerate(batches):
        for key, step in steps.items():
            start = time.perf_counter()
            losses[key].append(step(b))
            if i > 0:  # first batch is warm-up
                times[key].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    drift = max(abs(a - b) for a, b in zip(losses["ptune"], losses["peft"], strict=True))
    print(f"{name:<14} B={batch} T={tokens} P={PROMPT} reps={reps} threads={torch.get_num_threads()}")
    print(f"  ptune {med['ptune'] * 1e3:9.1f} ms/step   peft {med['peft'] * 1e3:9.1f} ms/step   "
          f"ratio ptune/peft {med['ptune'] / med['peft']:.3f}   max |loss diff| {drift:.2e}")


def tiny_base() -> BaseModel:
    """The tests' tiny Llama, built in a temp dir."""
    path = build_causal(Path(tempfile.mkdtemp(prefix="bench-tiny-")))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return from_objects(model, AutoTokenizer.from_pretrained(path), str(path))


def smollm2_base(threads: int | None) -> BaseModel | None:
    """SmolLM2-135M via ptune.model.base.load_base_model, or None with a message when unavailable."""
    try:
        from ptune.model.base import load_base_model
    except ImportError:
        print("smollm2: skipped (ptune.model.base.load_base_model is not available yet)")
        return None
    try:
        return load_base_model("smollm2-135m", device="cpu", threads=threads)
    except Exception as exc:  # offline without the wheel, conversion failure, ...
        print(f"smollm2: skipped ({type(exc).__name__}: {exc})")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 tiny, 2 SmolLM2)")
    parser.add_argument("--smollm2", action="store_true", help="also compare on SmolLM2-135M")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads or 1)
    compare("tiny-llama", tiny_base(), args.reps, args.batch, args.tokens)
    if args.smollm2:
        torch.set_num_threads(args.threads or 2)
        base = smollm2_base(args.threads or 2)
        if base is not None:
            compare("smollm2-135m", base, max(3, args.reps // 4), args.batch, args.tokens)


if __name__ == "__main__":
    main()
