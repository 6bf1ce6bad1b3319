"""Two runs side by side at 1 thread each vs one run at 2 threads: work done per second on a 2-core CPU.

Why ptune runs the nightly tasks one after another at 2 threads instead of two at a time at 1 thread: this
measures what running side by side would gain. Each setting runs in fresh processes (spawned, the model held
as a run holds it: `model_dtype: auto`, bf16 autocast where `precision: auto` picks it), loads the model, does
one warm-up step, waits at a barrier so that side-by-side processes start together, then times `--reps` steps.
Throughput = steps of all processes / the slowest process's wall time. Settings alternate (reference, side by
side, reference, ...) over `--rounds`, so load from other processes hits both alike; medians are reported.

Workloads (SmolLM2-135M, the default model):
  train    one prompt-tuning step: forward + backward of a 20-token soft prompt + 50 tokens, batch 8, gradients
           only into the prompt
  forward  an evaluation forward at xsum's length: 16 rows x 450 tokens, no gradients

Usage: python bench/bench_side_by_side.py [--reps N] [--rounds R] [--workloads train forward] [--model M]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import prompt_step  # noqa: E402
from ptune.model.base import available_cores, load_held_model  # noqa: E402
from ptune.model.precision import autocast, autocast_dtype  # noqa: E402

WORKLOADS = {"train": (8, 50, True), "forward": (16, 450, False)}  # name: (batch, tokens, backward)
PROMPT = 20
POLICIES = {"train.precision": "auto", "evaluate.precision": "auto"}


def _worker(model: str, workload: str, threads: int, reps: int, barrier, queue) -> None:
    base = load_held_model(model, "auto", POLICIES, threads=threads)
    dtype = autocast_dtype("auto", base.device, base.n_params)
    batch, tokens, backward = WORKLOADS[workload]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, base.model.config.vocab_size, (batch, tokens), generator=gen)  # (B, T)
    prompt = ((torch.rand(PROMPT, base.hidden_size, generator=gen) - 0.5) * 0.1).requires_grad_()  # (P, d)
    with autocast(base.device, dtype):
        prompt_step(base, prompt, ids, backward)  # warm-up
        barrier.wait()
        start = time.perf_counter()
        times = [prompt_step(base, prompt, ids, backward) for _ in range(reps)]
    queue.put((times, time.perf_counter() - start))


def run_setting(model: str, workload: str, procs: int, threads: int, reps: int) -> tuple[float, float]:
    """(median seconds per step of one process, steps per second of all processes together)."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(model, workload, threads, reps, barrier, queue)) for _ in range(procs)]
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
        if w.exitcode:
            raise SystemExit(f"a {workload} worker exited with {w.exitcode}")
    step = statistics.median(t for times, _ in results for t in times)
    return step, procs * reps / max(wall for _, wall in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--reps", type=int, default=6, help="timed steps per process and round")
    parser.add_argument("--rounds", type=int, default=2, help="reference / side-by-side alternations")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--procs", type=int, default=2, help="side-by-side processes, 1 thread each")
    args = parser.parse_args(argv)
    print(f"{args.model}; {available_cores()} cores available; reference: 1 process x {args.procs} threads; "
          f"side by side: {args.procs} processes x 1 thread; {args.reps} steps x {args.rounds} rounds")
    print(f"{'workload':<10}{'ref s/step':>12}{'ref steps/s':>13}{'sbs s/step':>12}{'sbs steps/s':>13}{'ratio':>8}")
    for workload in args.workloads:
        ref, sbs = [], []
        for _ in range(args.rounds):
            ref.append(run_setting(args.model, workload, 1, args.procs, args.reps))
            sbs.append(run_setting(args.model, workload, args.procs, 1, args.reps))
        r_step, r_rate = (statistics.median(x[i] for x in ref) for i in (0, 1))
        s_step, s_rate = (statistics.median(x[i] for x in sbs) for i in (0, 1))
        print(f"{workload:<10}{r_step:>12.3f}{r_rate:>13.3f}{s_step:>12.3f}{s_rate:>13.3f}{s_rate / r_rate:>7.2f}x")
    print("ratio = side-by-side steps/s over the reference's; > 1: running side by side does more work per second.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
