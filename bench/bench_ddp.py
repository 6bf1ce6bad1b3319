"""Data-parallel scaling of ptune's prompt-tuning train step: one process vs N ranks (`ptune train --nproc`'s code).

The ranks are started by `ptune.training.distributed.launch` and join with `joined` (NCCL, one GPU a rank; gloo on
the CPU); each step is `ptune.training.train.train_step` with the rank's `Sync`: its share of one fixed global
batch, the token-weighted loss and the gradient all-reduce. The one process runs the same step on the whole batch,
in this process, so N ranks take the step one process takes (strong scaling, as `--nproc` does).
throughput = global rows / median step seconds (rank 0's clock, a barrier before each step, CUDA-synchronised);
scaling efficiency = throughput_N / (N x throughput_1).
Model: SmolLM2-135M's shape with random weights (bench_gpu.py), precision `auto` (bf16 autocast on a GPU), global
batch 32 x 64 tokens + 20 prompt tokens. N = every visible GPU; with one, N = 1 and the JSON says "1 GPU visible:
scaling not measured" (the 1-rank launch through torch elastic and NCCL is still timed against the in-process step).
--cpu: a tiny shape, 2 gloo ranks sharing the cores (tests the script, not a measurement).
Usage: python bench/bench_ddp.py [--steps 20] [--batch 32] [--nproc N] [--out PATH] [--cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_gpu import SMALL, SMOLLM2, build  # noqa: E402

from ptune.config import TrainConfig  # noqa: E402
from ptune.model.base import available_cores  # noqa: E402
from ptune.model.precision import autocast_dtype  # noqa: E402
from ptune.model.soft_prompt import SoftPrompt  # noqa: E402
from ptune.training.distributed import SINGLE, Sync, joined, launch  # noqa: E402
from ptune.training.state import new_state  # noqa: E402
from ptune.training.train import train_step  # noqa: E402

TOKENS, PROMPT, WARMUP = 64, 20, 3


def measure(cpu: bool, batch: int, steps: int, sync: Sync) -> dict:
    """Median seconds of `steps` train steps (after WARMUP) on this rank's share of a global batch of `batch`
    rows; every rank builds the same model, prompt and batch from the same seeds."""
    device = torch.device("cpu") if cpu else torch.device("cuda", torch.cuda.current_device())
    base = build(SMALL if cpu else SMOLLM2, device)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, base.model.config.vocab_size, (batch, TOKENS), generator=gen)  # (B, T), global
    rows = sync.shard(range(batch))
    mine = {"input_ids": ids[rows].to(device), "attention_mask": torch.ones(len(rows), TOKENS, dtype=torch.long,
                                                                             device=device)}
    mine["labels"] = mine["input_ids"].clone()
    cfg = TrainConfig(n_tokens=PROMPT, init="random", batch_size=batch, max_steps=10**6)
    state = new_state(SoftPrompt((torch.rand(PROMPT, base.hidden_size, generator=gen) - 0.5).to(device)), cfg)
    amp = autocast_dtype(cfg.precision, device, base.n_params, "train.precision")
    times = []
    for step in range(WARMUP + steps):
        if sync.world > 1:
            torch.distributed.barrier()
        start = time.perf_counter()
        train_step(base, state, mine, cfg, amp, 0.0, sync)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= WARMUP:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"model": base.spec, "median_step_s": median, "examples_per_s": batch / median, "rows_per_rank": len(rows),
            "autocast": str(amp).removeprefix("torch.") if amp else None, "threads": torch.get_num_threads()}


def rank_main(cpu: bool, batch: int, steps: int) -> dict:
    """One rank started by `launch`: join the group as `ptune train --nproc` does, then `measure`."""
    with joined(not cpu) as sync:
        if cpu:
            torch.set_num_threads(int(os.environ["PTUNE_THREADS"]))  # `joined` shares the cores among the ranks
        found = measure(cpu, batch, steps, sync)
        return {**{k: v for k, v in found.items() if k != "model"}, "world": sync.world}


def run(cpu: bool, nproc: int, batch: int, steps: int) -> dict:
    """The one-process baseline here, then `nproc` ranks; the efficiency and a note for the JSON."""
    torch.set_num_threads(int(os.environ.get("PTUNE_THREADS") or available_cores()))
    single = measure(cpu, batch, steps, SINGLE)
    if not cpu:
        torch.cuda.empty_cache()
    gpus = 0 if cpu else torch.cuda.device_count()
    try:
        ranks = launch(nproc, rank_main, cpu, batch, steps)
    except Exception as exc:  # noqa: BLE001 - keep the one-process number, say why the ranks gave none
        ranks = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    measured = ranks["examples_per_s"] / (nproc * single["examples_per_s"]) if "error" not in ranks else None
    note = (f"{'1 rank' if cpu else '1 GPU visible'}: scaling not measured (efficiency 1.0 by definition; "
            f"launch_over_in_process is the 1-rank launch through torch elastic and {'gloo' if cpu else 'NCCL'} "
            "against the in-process step)" if nproc == 1 else
            f"{nproc} {'gloo ranks on the CPU' if cpu else 'GPUs, NCCL'}: measured")
    return {"device": "cpu" if cpu else torch.cuda.get_device_name(), "visible_gpus": gpus, "nproc": nproc,
            "backend": "gloo" if cpu else "nccl", "model": single.pop("model"), "global_batch": [batch, TOKENS],
            "prompt_tokens": PROMPT, "steps": steps, "single": single, "ranks": ranks,
            "scaling_efficiency": 1.0 if nproc == 1 and measured else measured,
            "scaling_measured": nproc > 1 and measured is not None,
            **({"launch_over_in_process": measured} if nproc == 1 else {}),
            "note": note if measured is not None else f"the ranks failed: {ranks['error']}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32, help="global batch rows (each rank gets batch / N)")
    parser.add_argument("--nproc", type=int, default=0, help="ranks (default: every GPU; 2 with --cpu)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_ddp.json"))
    parser.add_argument("--cpu", action="store_true", help="2 gloo ranks on the CPU, tiny shape (tests the script)")
    args = parser.parse_args()
    cpu = args.cpu or not torch.cuda.is_available()
    nproc = args.nproc or (2 if cpu else torch.cuda.device_count())
    out = run(cpu, nproc, args.batch, args.steps)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
