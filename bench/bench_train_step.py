"""One prompt-tuning train step, three ways: vs PEFT, vs a forward-only pass, and in memory vs full fine-tuning.

1. ptune step / PEFT PromptTuning step (fwd + bwd + Adafactor lr 0.3, 20-token prompt, fp32), goal <= 0.65;
   the same at ptune's default precision on this CPU (bf16 autocast for both; PEFT with the model's own
   SDPA attention, as a PEFT user runs it; ptune with its CPU bf16 training attention, eager).
2. ptune step / forward-only pass (torch.inference_mode, same batch and prompt), goal <= 2.0.
   ptune step / LoRA step (PEFT, r 8 on q/v, AdamW; fp32, same batch), goal <= 0.9.
   Both also in bf16: fp32 time / bf16 time, goals >= 1.25 (step: autocast) and >= 1.8 (forward, as
   evaluation runs it on CPU: weights held in bf16, `eval_bf16_speedup`; autocast alone: `eval_autocast_speedup`).
   Roofline: the step's FLOPs (torch FlopCounterMode) / its time, against an n x n matmul's FLOP/s measured
   in the same process, per dtype; goal >= 0.5.
3. peak RSS of prompt tuning (ptune's default precision policy: bf16 autocast on CPUs with bf16 units) /
   full fine-tuning (fp32, AdamW on every parameter), each measured in a fresh child process of this
   script (hidden `--memory-child prompt|full`) that loads the model, records its RSS, runs 2 steps and
   reports ru_maxrss; goal <= 0.4. Also with the frozen weights held in bf16 (params.yaml `model_dtype: bf16`):
   peak RSS and the train step under bf16 autocast, next to the fp32-held ones.
Timings are interleaved (order rotated each repetition, first repetition is warm-up) and medians are
reported. Results are printed and written to bench/results/train_step_<model>.json. Asserts nothing.
Usage: python bench/bench_train_step.py [--model tiny|smollm2] [--reps N] [--threads N]
(SmolLM2 at --reps 3 takes a few minutes on 2 busy cores.)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_peft import PROMPT, lora_step, peft_step, ptune_step  # noqa: E402
from ptune.model.base import BaseModel, load_base_model  # noqa: E402
from ptune.model.batching import collate, encode_pair  # noqa: E402
from ptune.model.precision import auto_hold, autocast, autocast_dtype, hold_matmul_weights, training_attention  # noqa: E402
from ptune.model.soft_prompt import SoftPrompt, init_prompt, prompt_inputs  # noqa: E402
from tests.tiny_models import WORDS, build_causal  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOALS = {"ptune_over_peft": 0.65, "ptune_over_lora": 0.9, "train_over_forward": 2.0, "prompt_over_full_peak_rss": 0.4,
         "bf16_speedup": 1.25, "eval_bf16_speedup": 1.8, "shared_prompt_speedup": 1.0,
         "fraction_of_peak": 0.5}  # speed-ups: at least; the others: at most
BATCH, TOKENS, MEMORY_STEPS = 8, 64, 2
Batch = dict[str, torch.Tensor]


def load(model: str, tiny_dir: str | None, threads: int | None, dtype: str | None = None) -> BaseModel:
    """SmolLM2-135M from ptune's cache, or the tests' tiny Llama from `tiny_dir`, frozen on CPU, held in `dtype`."""
    spec = "smollm2-135m" if model == "smollm2" else str(tiny_dir)
    base = load_base_model(spec, device="cpu", threads=threads, dtype=dtype)
    base.model.train(False)  # frozen base: dropout off, as in ptune's training
    return base


def make_batch(base: BaseModel, batch: int = BATCH, tokens: int = TOKENS, seed: int = 0) -> Batch:
    """A classification-style batch through encode_pair + collate: rows of ~`tokens` ids, right-padded.

    Row 0 is exactly `tokens` long; the others are up to 12 tokens shorter, so there is real padding."""
    rng, tok = random.Random(seed), base.tokenizer
    items = []
    for i in range(batch):
        target = rng.choice(["positive", "negative"])
        n_target = len(tok(" " + target, add_special_tokens=False)["input_ids"])
        source = "Review: " + " ".join(rng.choice(WORDS) for _ in range(2 * tokens)) + "\nSentiment:"
        keep = tokens - n_target - (0 if i == 0 else rng.randint(1, 12))
        items.append(encode_pair(tok, source, target, encoder_decoder=False, add_eos=False, max_source_tokens=keep))
    return collate(items, tok.pad_token_id, encoder_decoder=False)  # each (B, T)


def forward_only(base: BaseModel, weight: torch.Tensor) -> Callable[[Batch], float]:
    """A forward pass (loss included) with the same prompt and inputs as ptune_step, no autograd."""
    prompt = SoftPrompt(weight)

    def run(batch: Batch) -> float:
        with torch.inference_mode():
            kwargs = prompt_inputs(base, prompt(batch["input_ids"].shape[0]), **batch)
            return float(base.model(**kwargs, use_cache=False).loss)

    return run


def in_bf16(step: Callable[[Batch], float]) -> Callable[[Batch], float]:
    """`step` under bf16 autocast (ptune's precision policy `bf16`: weights and prompt stay fp32)."""

    def run(batch: Batch) -> float:
        with autocast(torch.device("cpu"), torch.bfloat16):
            return step(batch)

    return run


def train_in_bf16(base: BaseModel, step: Callable[[Batch], float]) -> Callable[[Batch], float]:
    """A train `step` as ptune's training runs it under bf16: autocast, and eager attention on CPU
    (`ptune.model.precision.training_attention`)."""

    def run(batch: Batch) -> float:
        with training_attention(base.model, base.device, torch.bfloat16):
            return in_bf16(step)(batch)

    return run


def time_steps(base: BaseModel, batch: Batch, reps: int, held: BaseModel, matmul: BaseModel) -> dict:
    """Interleaved timings of ptune step, PEFT step and forward-only on one batch, in fp32 and (ptune step,
    forward) in bf16 autocast, and the ptune step on `held` (the same model held in bf16) and on `matmul` (its
    linear weights held in bf16: how `model_dtype: auto` trains under bf16); medians in seconds."""
    weight = init_prompt(base, PROMPT, "vocab", seed=0).weight.detach().cpu()  # (P, d)
    peft, lora = peft_step(base, weight), lora_step(base)  # one PEFT model each (LoRA copies the base module):
    # their bf16 runs time the same models under autocast; only the first-step losses are compared
    runs = {"ptune": ptune_step(base, weight), "peft": peft, "forward": forward_only(base, weight),
            "ptune_plain": ptune_step(base, weight, shared=False), "lora": lora,
            # ptune's default bf16 training: autocast over the linear weights held in bf16 (model_dtype auto), the
            # same numbers as autocast over fp32 weights ("ptune_bf16_fp32w") without the re-cast at every matmul
            "ptune_bf16": train_in_bf16(matmul, ptune_step(matmul, weight)),
            "ptune_bf16_fp32w": train_in_bf16(base, ptune_step(base, weight)),
            "forward_bf16": in_bf16(forward_only(base, weight)),
            "ptune_bf16w": train_in_bf16(held, ptune_step(held, weight)),
            # how evaluation runs in bf16 on CPU (ptune.model.precision.inference_precision): the frozen weights
            # held in bf16 for the pass (here: the bf16-held copy, cast once), under autocast
            "forward_bf16w": in_bf16(forward_only(held, weight)),
            "peft_bf16": in_bf16(peft), "lora_bf16": in_bf16(lora)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    losses: dict[str, list[float]] = {k: [] for k in runs}
    keys = list(runs)
    for rep in range(reps + 1):
        for key in keys[rep % len(keys):] + keys[:rep % len(keys)]:  # rotate: no side always goes first
            start = time.perf_counter()
            losses[key].append(runs[key](batch))
            if rep > 0:  # repetition 0 is warm-up
                times[key].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    fastest = {k: min(v) for k, v in times.items()}  # less sensitive to other processes than the median
    # first step only: same prompt, same batch; later steps drift apart because lr 0.3 amplifies rounding
    drift = abs(losses["ptune"][0] - losses["peft"][0])
    return {"median_s": med, "min_s": fastest, "times_s": times,
            "min_ptune_over_peft": fastest["ptune"] / fastest["peft"],
            "min_train_over_forward": fastest["ptune"] / fastest["forward"], "losses": losses, "max_abs_loss_diff_ptune_peft": drift,
            "ptune_over_peft": med["ptune"] / med["peft"], "train_over_forward": med["ptune"] / med["forward"],
            "shared_prompt_speedup": med["ptune_plain"] / med["ptune"],
            "ptune_over_lora": med["ptune"] / med["lora"],
            "bf16_speedup": med["ptune"] / med["ptune_bf16"], "eval_bf16_speedup": med["forward"] / med["forward_bf16w"],
            "eval_autocast_speedup": med["forward"] / med["forward_bf16"],
            "max_abs_loss_diff_fp32_bf16": abs(losses["forward"][0] - losses["forward_bf16"][0]),
            "bf16_weights_speedup": med["ptune"] / med["ptune_bf16w"],
            # same precision as ptune's default on this CPU: PEFT and LoRA under bf16 autocast with the model's
            # own attention (SDPA), as a PEFT user runs them; ptune's step as its training runs it (eager on CPU)
            "ptune_over_peft_bf16": med["ptune_bf16"] / med["peft_bf16"],
            "ptune_over_lora_bf16": med["ptune_bf16"] / med["lora_bf16"],
            "bf16_weights_over_autocast": med["ptune_bf16w"] / med["ptune_bf16"],
            "abs_loss_diff_bf16_weights": abs(losses["ptune_bf16"][0] - losses["ptune_bf16w"][0]),
            "matmul_held_speedup": med["ptune_bf16_fp32w"] / med["ptune_bf16"],
            "abs_loss_diff_matmul_held": abs(losses["ptune_bf16"][0] - losses["ptune_bf16_fp32w"][0])}


def step_flops(base: BaseModel, batch: Batch) -> int:
    """FLOPs of one ptune train step (forward + backward to the prompt), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    step = ptune_step(base, init_prompt(base, PROMPT, "vocab", seed=0).weight.detach().cpu())
    with FlopCounterMode(display=False) as counter:
        step(batch)
    return int(counter.get_total_flops())


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of an n x n matmul in `dtype` on this CPU with torch's threads: the in-process roofline."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def roofline(base: BaseModel, batch: Batch, timing: dict) -> dict:
    """Achieved FLOP/s of the train step (fp32 and bf16 autocast) against the matmul peak of each dtype."""
    flops = step_flops(base, batch)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    achieved = {"fp32": flops / timing["median_s"]["ptune"], "bf16": flops / timing["median_s"]["ptune_bf16"]}
    return {"flops_per_step": flops, "matmul_peak_flops": peak, "achieved_flops": achieved,
            "fraction_of_peak": {k: achieved[k] / peak[k] for k in peak}}


def rss_kb() -> int:
    """Current resident set size of this process in KB (Linux /proc)."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def full_step(base: BaseModel) -> Callable[[Batch], float]:
    """Full fine-tuning step: every parameter trainable, AdamW, no prompt."""
    base.model.requires_grad_(True)
    opt = torch.optim.AdamW(base.model.parameters(), lr=1e-5)

    def step(batch: Batch) -> float:
        loss = base.model(**batch, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def memory_child(mode: str, model: str, tiny_dir: str | None, threads: int | None) -> dict:
    """Runs inside the child: load, record RSS, 2 train steps, report peak RSS (KB)."""
    base = load(model, tiny_dir, threads, "bfloat16" if mode == "prompt_bf16w" else None)
    if mode == "prompt":  # as stages.load_base holds the default (model_dtype auto, both precisions auto)
        auto_hold(base.model, base.device, base.n_params, {"train.precision": "auto", "evaluate.precision": "auto"})
    with torch.no_grad():  # weights may be lazily mmapped from safetensors: page them in so RSS counts them
        for param in base.model.parameters():
            param.sum()
    gc.collect()
    after_load, load_peak = rss_kb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    batch = make_batch(base)
    amp = None
    if mode in ("prompt", "prompt_fp32w"):  # default precision (auto): bf16 autocast where the CPU has bf16 units;
        # "prompt" holds the weights as model_dtype auto does, "prompt_fp32w" all in fp32 (the holder before it)
        step = ptune_step(base, init_prompt(base, PROMPT, "vocab", seed=0).weight.detach())
        amp = autocast_dtype("auto", torch.device("cpu"), base.n_params)
        step = train_in_bf16(base, step) if amp is not None else step
    elif mode == "prompt_bf16w":  # model_dtype bf16: weights held in bf16, always under bf16 autocast
        step, amp = train_in_bf16(base, ptune_step(base, init_prompt(base, PROMPT, "vocab", seed=0).weight.detach().float())), torch.bfloat16
    else:  # the reference a user would otherwise run: full fine-tuning in fp32 with AdamW
        step = full_step(base)
    trainable = sum(p.numel() for p in base.model.parameters() if p.requires_grad) if mode == "full" else PROMPT * base.hidden_size
    start = time.perf_counter()
    losses = [step(batch) for _ in range(MEMORY_STEPS)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    return {"mode": mode, "autocast": str(amp), "rss_after_load_kb": after_load, "peak_rss_during_load_kb": load_peak,
            "peak_rss_kb": peak, "increase_over_load_kb": peak - after_load, "trainable_params": trainable,
            "steps": MEMORY_STEPS, "losses": losses, "seconds": time.perf_counter() - start}


def measure_memory(model: str, tiny_dir: str | None, threads: int | None) -> dict:
    """Run each memory child in a fresh process of this script; returns both reports and the ratio."""
    out = {}
    for mode in ("prompt", "prompt_fp32w", "prompt_bf16w", "full"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", mode, "--model", model]
        cmd += ["--tiny-dir", tiny_dir] if tiny_dir else []
        cmd += ["--threads", str(threads)] if threads else []
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["prompt_over_full_peak_rss"] = out["prompt"]["peak_rss_kb"] / out["full"]["peak_rss_kb"]
    out["prompt_bf16_weights_over_full_peak_rss"] = out["prompt_bf16w"]["peak_rss_kb"] / out["full"]["peak_rss_kb"]
    out["prompt_fp32_weights_over_full_peak_rss"] = out["prompt_fp32w"]["peak_rss_kb"] / out["full"]["peak_rss_kb"]
    return out


def conditions(threads_note: str) -> dict:
    """What the machine was doing, so readers can judge the timings."""
    import peft
    import transformers

    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "threads_note": threads_note,
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def print_table(res: dict) -> None:
    """The three ratios with their goals, plus the raw numbers behind them."""
    t, m, c = res["timing"], res["memory"], res["conditions"]
    med = {k: v * 1e3 for k, v in t["median_s"].items()}
    b = res["batch"]
    print(f"\n{res['model']}: B={b['batch']} T={b['width']} (pad {b['pad_fraction']:.0%}) P={PROMPT} reps={res['reps']} "
          f"threads={c['torch_threads']} cpus={c['cpu_count']} load={c['loadavg_start'][0]:.2f}->{c['loadavg'][0]:.2f}")
    rows = [("train step ptune / peft", t["ptune_over_peft"], GOALS["ptune_over_peft"],
             f"ptune {med['ptune']:.1f} ms, peft {med['peft']:.1f} ms (min-based {t['min_ptune_over_peft']:.3f}), "
             f"|loss diff| {t['max_abs_loss_diff_ptune_peft']:.1e}"),
            ("train step / forward-only", t["train_over_forward"], GOALS["train_over_forward"],
             f"train {med['ptune']:.1f} ms, forward {med['forward']:.1f} ms (min-based {t['min_train_over_forward']:.3f})"),
            ("train step ptune / LoRA r8", t["ptune_over_lora"], GOALS["ptune_over_lora"],
             f"ptune {med['ptune']:.1f} ms, LoRA (q,v) {med['lora']:.1f} ms"),
            ("bf16: ptune / peft", t["ptune_over_peft_bf16"], GOALS["ptune_over_peft"],
             f"ptune {med['ptune_bf16']:.1f} ms, peft {med['peft_bf16']:.1f} ms (bf16 autocast both)"),
            ("bf16: ptune / LoRA r8", t["ptune_over_lora_bf16"], GOALS["ptune_over_lora"],
             f"ptune {med['ptune_bf16']:.1f} ms, LoRA (q,v) {med['lora_bf16']:.1f} ms (bf16 autocast both)"),
            ("shared prompt pass speed-up", t["shared_prompt_speedup"], GOALS["shared_prompt_speedup"],
             f"plain {med['ptune_plain']:.1f} ms, shared {med['ptune']:.1f} ms"),
            ("bf16 speed-up, train step", t["bf16_speedup"], GOALS["bf16_speedup"],
             f"fp32 {med['ptune']:.1f} ms, bf16 {med['ptune_bf16']:.1f} ms (linear weights held in bf16; over fp32 "
             f"weights {med['ptune_bf16_fp32w']:.1f} ms, |first loss diff| {t['abs_loss_diff_matmul_held']:.1e})"),
            ("bf16 speed-up, forward", t["eval_bf16_speedup"], GOALS["eval_bf16_speedup"],
             f"fp32 {med['forward']:.1f} ms, bf16 as evaluation runs it (weights held) {med['forward_bf16w']:.1f} ms; "
             f"autocast only {med['forward_bf16']:.1f} ms ({t['eval_autocast_speedup']:.2f}x), "
             f"|loss diff| {t['max_abs_loss_diff_fp32_bf16']:.1e}"),
            ("peak RSS prompt / full FT", m["prompt_over_full_peak_rss"], GOALS["prompt_over_full_peak_rss"],
             f"prompt {m['prompt']['peak_rss_kb'] / 1024:.0f} MiB (+{m['prompt']['increase_over_load_kb'] / 1024:.0f}; "
             f"model_dtype auto), full {m['full']['peak_rss_kb'] / 1024:.0f} MiB "
             f"(+{m['full']['increase_over_load_kb'] / 1024:.0f})"),
            ("peak RSS fp32-held / full", m["prompt_fp32_weights_over_full_peak_rss"], GOALS["prompt_over_full_peak_rss"],
             f"prompt, every weight fp32 {m['prompt_fp32w']['peak_rss_kb'] / 1024:.0f} MiB "
             f"(+{m['prompt_fp32w']['increase_over_load_kb'] / 1024:.0f}); model_dtype: fp32"),
            ("peak RSS bf16-held / full", m["prompt_bf16_weights_over_full_peak_rss"], GOALS["prompt_over_full_peak_rss"],
             f"prompt, weights bf16 {m['prompt_bf16w']['peak_rss_kb'] / 1024:.0f} MiB "
             f"(+{m['prompt_bf16w']['increase_over_load_kb'] / 1024:.0f}); model_dtype: bf16"),
            ("bf16 weights speed-up, step", t["bf16_weights_speedup"], GOALS["bf16_speedup"],
             f"fp32 {med['ptune']:.1f} ms, bf16 weights + autocast {med['ptune_bf16w']:.1f} ms "
             f"({t['bf16_weights_over_autocast']:.2f}x the fp32-held autocast step), "
             f"|first loss diff| {t['abs_loss_diff_bf16_weights']:.1e}")]
    r = t["roofline"]
    for dtype in ("fp32", "bf16"):
        rows.append((f"step FLOP/s / peak, {dtype}", r["fraction_of_peak"][dtype], GOALS["fraction_of_peak"],
                     f"{r['achieved_flops'][dtype] / 1e9:.1f} of {r['matmul_peak_flops'][dtype] / 1e9:.1f} GFLOP/s "
                     f"({r['flops_per_step'] / 1e9:.1f} GFLOP per step)"))
    print(f"  {'ratio':<27}{'value':>7}  {'goal':<8}{'met':<5}detail")
    for name, value, goal, detail in rows:
        at_least = "speed-up" in name or "peak," in name  # goals from below
        met = value >= goal if at_least else value <= goal
        print(f"  {name:<27}{value:>7.3f}  {'>=' if at_least else '<='} {goal:<5}{'yes' if met else 'no':<5}{detail}")


def run(args: argparse.Namespace) -> dict:
    """Memory children first (the parent holds no model yet), then the interleaved timings."""
    threads = args.threads or (torch.get_num_threads() if os.environ.get("OMP_NUM_THREADS") else None)
    note = "--threads" if args.threads else "OMP_NUM_THREADS" if threads else "ptune.model.base.choose_threads"
    tiny_dir = str(build_causal(Path(tempfile.mkdtemp(prefix="bench-tiny-")))) if args.model == "tiny" else None
    load_start, start = os.getloadavg(), time.perf_counter()
    memory = measure_memory(args.model, tiny_dir, threads)
    base = load(args.model, tiny_dir, threads)
    held = load(args.model, tiny_dir, threads, "bfloat16")
    matmul = load(args.model, tiny_dir, threads)
    hold_matmul_weights(matmul.model, torch.bfloat16)
    batch = make_batch(base)
    torch.manual_seed(0)
    timing = time_steps(base, batch, args.reps, held, matmul)
    timing["roofline"] = roofline(base, batch, timing)
    mask = batch["attention_mask"]
    shape = {"batch": int(mask.shape[0]), "width": int(mask.shape[1]), "prompt_tokens": PROMPT,
             "real_tokens_per_row": mask.sum(1).tolist(), "pad_fraction": float(1 - mask.float().mean())}
    cond = conditions(note) | {"loadavg_start": load_start}
    return {"model": base.spec if args.model == "smollm2" else "tiny-llama", "reps": args.reps, "batch": shape,
            "goals": GOALS, "timing": timing, "memory": memory, "conditions": cond,
            "wall_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="smollm2")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions after one warm-up (default 30 tiny, 5 smollm2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: $OMP_NUM_THREADS if set, else ptune's size rule)")
    parser.add_argument("--memory-child", choices=("prompt", "prompt_fp32w", "prompt_bf16w", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--tiny-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.reps = args.reps or (30 if args.model == "tiny" else 5)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.model, args.tiny_dir, args.threads)))
        return
    res = run(args)
    print_table(res)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"train_step_{args.model}.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}  ({res['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
