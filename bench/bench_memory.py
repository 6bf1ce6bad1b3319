"""Peak memory of prompt tuning, measured against ptune.model.memory's estimate, and the 7B projection.

Each measurement is a fresh subprocess whose peak resident set (VmHWM) is the number: (a) the runtime
alone (torch + transformers + ptune imported), (b) SmolLM2 loaded, (c) training steps with the project's own
`train_step` (prompt + residual MLP + optimizer, spike guard on), fp32 and bf16-held, (d) an evaluation forward.
Prints measured vs estimated with the ratio and writes bench/results/memory.json.

    python bench/bench_memory.py                  # every SmolLM2 measurement (~3 min, 1 thread)
    python bench/bench_memory.py --project-7b     # the 7B table only (no model loaded)
    python bench/bench_memory.py --checkpointing  # b8 x 128 training with/without activation checkpointing (no write)
    python bench/bench_memory.py --child '{...}'  # one measurement (what the parent runs)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "memory.json"
MACHINE = "2-core AMD EPYC, AVX2 only, no GPU"


def peak_rss() -> int:
    """Peak resident set of this process in bytes: VmHWM, this process image's own high-water mark. ru_maxrss (the
    fallback; KiB on Linux) also keeps the parent's peak when the parent was larger: a vfork-and-exec child
    (Python's subprocess) inherits it at exec, so a child of a 1 GB pytest process read 1 GB before doing anything."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _batch(vocab: int, batch: int, seq_len: int, target_tokens: int, seed: int = 0) -> dict:
    """Random ids (batch, seq_len), the last `target_tokens` of each row the target: a full, unpadded batch."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, min(vocab, 5000), (batch, seq_len), generator=gen)  # (B, T)
    labels = torch.full_like(ids, -100)
    labels[:, seq_len - target_tokens:] = ids[:, seq_len - target_tokens:]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _load(job: dict):
    """The base model of `job`: a built-in / directory through ptune's loader, or a random Llama of `shape`."""
    from ptune.model.base import from_objects, load_held_model

    if "shape" not in job:
        policies = {"train.precision": job.get("precision", "fp32"), "evaluate.precision": job.get("precision", "fp32")}
        return load_held_model(job["model"], job.get("model_dtype", "fp32"), policies, device="cpu", threads=1)
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**job["shape"])).eval().requires_grad_(False)
    return from_objects(model, AutoTokenizer.from_pretrained(job["tokenizer"]), "random-llama")


def child(job: dict) -> dict:
    """Run one measurement in this (fresh) process; returns what it measured."""
    import torch

    torch.set_num_threads(1)
    import transformers  # noqa: F401  the runtime: what every ptune process imports

    import ptune.training.train  # noqa: F401
    out: dict = {"runtime": peak_rss()}
    if job["what"] == "runtime":
        return out
    base = _load(job)
    out["loaded"], out["n_params"] = peak_rss(), base.n_params
    sum(float(p.float().sum()) for p in base.model.parameters())  # page in mmapped weights, as a first step would
    if job["what"] in ("train", "eval"):
        out["step_seconds"] = _run_steps(base, job)
        out["seconds"] = sum(out["step_seconds"])
    out["peak"] = peak_rss()
    return out


def _run_steps(base, job: dict) -> list[float]:
    """`job['steps']` training steps (ptune.training.train.train_step) or evaluation forwards; seconds of each."""
    import torch

    from ptune.config import TrainConfig
    from ptune.model.precision import autocast_dtype, inference_precision
    from ptune.model.soft_prompt import SoftPrompt, shared_prompt_inputs, target_loss
    from ptune.training.state import new_state
    from ptune.training.train import train_step

    amp = autocast_dtype(job.get("precision", "fp32"), base.device, base.n_params)
    batch = _batch(base.model.config.vocab_size, job["batch_size"], job["seq_len"], job["target_tokens"])
    prompt = SoftPrompt(torch.randn(job["n_tokens"], base.hidden_size) * 0.1)
    times = [time.perf_counter()]
    if job["what"] == "eval":
        with torch.no_grad(), inference_precision(base.model, base.device, amp):
            for _ in range(job["steps"]):
                target_loss(base, shared_prompt_inputs(base, prompt.weight, **batch))
                times.append(time.perf_counter())
        return [b - a for a, b in zip(times, times[1:], strict=False)]
    cfg = TrainConfig(n_tokens=job["n_tokens"], optimizer=job["optimizer"], reparam=job["reparam"],
                      reparam_bottleneck=job["reparam_bottleneck"], batch_size=job["batch_size"], spike_factor=5.0,
                      gradient_checkpointing=job.get("checkpointing", False))
    state = new_state(prompt, cfg)
    for _ in range(job["steps"]):
        train_step(base, state, batch, cfg, amp, 0.0)
        times.append(time.perf_counter())
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def measure(job: dict) -> dict:
    """`child(job)` in a fresh subprocess (1 thread), so the peak is this job's peak alone."""
    env = {**os.environ, "PTUNE_THREADS": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {job} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


SMOLLM2 = {"model": "smollm2-135m", "n_tokens": 20, "optimizer": "adafactor", "reparam": "residual",
           "reparam_bottleneck": 400, "target_tokens": 1, "steps": 3}
JOBS = {  # name -> job: params.yaml's recipe (20-token prompt, residual MLP 400, Adafactor, spike guard) at batch 8
    "runtime": {"what": "runtime"},
    "load fp32": {**SMOLLM2, "what": "load"},
    "train fp32 b8 x 128": {**SMOLLM2, "what": "train", "batch_size": 8, "seq_len": 128},
    "train fp32 b8 x 256, 16 targets": {**SMOLLM2, "what": "train", "batch_size": 8, "seq_len": 256, "target_tokens": 16},
    "train bf16-held b8 x 128": {**SMOLLM2, "what": "train", "batch_size": 8, "seq_len": 128, "model_dtype": "bf16",
                                 "precision": "bf16", "steps": 2},
    "eval fp32 b16 x 128": {**SMOLLM2, "what": "eval", "batch_size": 16, "seq_len": 128},
    "train fp32 b8 x 128, checkpointing": {**SMOLLM2, "what": "train", "batch_size": 8, "seq_len": 128,
                                           "checkpointing": True},
}
CHECKPOINTING = {  # --checkpointing: the same step with and without; 5 steps, so steps 2-5 give the step time
    name: {**SMOLLM2, "what": "train", "batch_size": 8, "seq_len": 128, "steps": 5, "checkpointing": on}
    for name, on in (("train fp32 b8 x 128", False), ("train fp32 b8 x 128, checkpointing", True))}


def shape_for(job: dict):
    """The Shape of a job's model, from its config only."""
    from ptune.model.memory import shape_of

    if "shape" in job:
        return shape_of({"model_type": "llama", **job["shape"]})
    from transformers import AutoConfig

    from ptune.model.base import resolve_spec

    return shape_of(AutoConfig.from_pretrained(resolve_spec(job["model"]) or job["model"]))


def setting_for(job: dict):
    """The memory.Setting that describes a job (CPU; eager attention for a bf16 training step, as ptune runs it)."""
    from ptune.model.memory import Setting

    bf16 = job.get("precision") == "bf16"
    mode = {"train": "train", "eval": "eval"}.get(job["what"], "eval")
    return Setting(mode=mode, held=job.get("model_dtype", "fp32"), precision="bf16" if bf16 else "fp32",
                   batch_size=job.get("batch_size", 0), seq_len=job.get("seq_len", 0),
                   target_tokens=job.get("target_tokens", 0), n_tokens=job.get("n_tokens", 0),
                   optimizer=job.get("optimizer", "adafactor"), reparam_bottleneck=job.get("reparam_bottleneck", 0),
                   attention="eager" if bf16 and mode == "train" else "sdpa", device="cpu",
                   checkpointing=job.get("checkpointing", False))


def estimated(job: dict) -> float:
    """The estimate for a job: runtime alone, runtime + weights (load), or the whole peak."""
    from ptune.model.memory import CPU_RUNTIME, estimate

    if job["what"] == "runtime":
        return CPU_RUNTIME
    est = estimate(shape_for(job), setting_for(job))
    return est.runtime + est.weights if job["what"] == "load" else est.total


def compare(jobs: dict[str, dict]) -> list[dict]:
    """Measure each job in a fresh process and set it beside its estimate."""
    rows = []
    for name, job in jobs.items():
        got = measure(job)
        peak = got.get("peak", got["runtime"])
        est = estimated(job)
        rows.append({"name": name, "job": job, "measured": peak, "estimated": est, "ratio": est / peak, **got})
        steps = got.get("step_seconds", [])[1:]  # the first step also allocates and warms up
        timing = f"  step {sorted(steps)[len(steps) // 2]:.2f} s (median of {len(steps)})" if steps else ""
        print(f"{name:34s} measured {peak / 2**20:8.0f} MiB  estimated {est / 2**20:8.0f} MiB  ratio {est / peak:.2f}"
              f"{timing}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help="run one measurement (JSON job) and print its result")
    parser.add_argument("--project-7b", action="store_true", help="print the 7B projection table only")
    parser.add_argument("--only", help="measure only the jobs whose name contains this")
    parser.add_argument("--checkpointing", action="store_true",
                        help="b8 x 128 training with and without train.gradient_checkpointing; prints, writes nothing")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.project_7b:
        print(projection_table())
        return
    if args.checkpointing:
        print(json.dumps(compare(CHECKPOINTING)))
        return
    rows = compare({k: v for k, v in JOBS.items() if not args.only or args.only in k})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": MACHINE, "rows": rows,
                                   "projection_7b": projection_rows()}, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")



def projection(shape, batches: tuple[int, ...] = (1, 8), seq_len: int = 512) -> list[dict]:
    """Prompt tuning on an nf4 base (bf16 compute, Adafactor, params.yaml's prompt and reparam) vs full
    fine-tuning with AdamW (bf16, fp32 master and moments), on one CUDA device: peak bytes and their ratio, for
    prompt tuning with and without activation checkpointing (train.gradient_checkpointing)."""
    from ptune.model.memory import Setting, estimate

    common = dict(held="bf16", precision="bf16", seq_len=seq_len, device="cuda", attention="sdpa")
    rows = []
    for b in batches:
        pt = Setting(mode="train", quantize="nf4", reparam_bottleneck=400, batch_size=b, **common)
        pt, ck = estimate(shape, pt), estimate(shape, pt, checkpointing=True)
        ft = estimate(shape, Setting(mode="full_ft_adamw", batch_size=b, target_tokens=seq_len, **common))
        rows.append({"batch_size": b, "seq_len": seq_len, "prompt_tuning_nf4": pt.as_dict(),
                     "prompt_tuning_nf4_checkpointed": ck.as_dict(), "full_ft_adamw": ft.as_dict(),
                     "ratio": pt.total / ft.total, "ratio_checkpointed": ck.total / ft.total})
    return rows


def projection_rows() -> list[dict]:
    from ptune.model.memory import LLAMA2_7B, shape_of

    return projection(shape_of(LLAMA2_7B))


def projection_table() -> str:
    """The 7B projection as a markdown table (GiB)."""
    g = 2**30
    lines = ["| Llama-2-7B shape, seq 512 | batch | weights | trainable + grads + optimizer | activations | runtime | peak |",
             "|---|---|---|---|---|---|---|"]
    for row in projection_rows():
        for key, label in (("prompt_tuning_nf4", "prompt tuning, nf4 base, bf16, Adafactor"),
                           ("prompt_tuning_nf4_checkpointed", "... with gradient checkpointing"),
                           ("full_ft_adamw", "full fine-tuning, AdamW, bf16 + fp32 master")):
            b = row[key]
            states = b["trainable"] + b["grads"] + b["optimizer"]
            lines.append(f"| {label} | {row['batch_size']} | {b['weights'] / g:.2f} | {states / g:.2f} | "
                         f"{b['activations'] / g:.2f} | {b['runtime'] / g:.2f} | **{b['total'] / g:.2f}** |")
        lines.append(f"| ratio prompt tuning / full fine-tuning | {row['batch_size']} | | | | | **{row['ratio']:.3f}** |")
        lines.append(f"| ratio, with gradient checkpointing | {row['batch_size']} | | | | | "
                     f"**{row['ratio_checkpointed']:.3f}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
