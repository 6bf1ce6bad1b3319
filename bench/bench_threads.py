"""CPU threads vs train-step time, tiny test model and SmolLM2-135M side by side (why `choose_threads` exists).

One train step = forward + backward of a 20-token soft prompt + 50 input tokens (batch 8 x 70), with
gradients flowing only into the prompt, as in prompt tuning. Settings are interleaved (1, 2, 1, 2, ...)
so load from other processes on a shared machine hits both alike; the median is reported.
Usage: python bench/bench_threads.py [--reps N] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import prompt_step  # noqa: E402
from ptune.model.base import BaseModel, available_cores, choose_threads, load_base_model  # noqa: E402
from tests.tiny_models import build_causal  # noqa: E402

BATCH, PROMPT, TOKENS = 8, 20, 50  # (B, P + T) = (8, 70)


def measure(base: BaseModel, settings: list[int], reps: int) -> dict[int, float]:
    """Median seconds per step for each thread count, interleaved, after one warm-up each."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, base.model.config.vocab_size, (BATCH, TOKENS), generator=gen)  # (B, T)
    prompt = (torch.rand(PROMPT, base.hidden_size, generator=gen) - 0.5).requires_grad_()  # (P, d)
    times: dict[int, list[float]] = {n: [] for n in settings}
    for rep in range(reps + 1):
        for n in settings:
            torch.set_num_threads(n)
            seconds = prompt_step(base, prompt, ids)
            if rep:  # rep 0 is warm-up
                times[n].append(seconds)
    return {n: statistics.median(ts) for n, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed steps per setting (SmolLM2); tiny gets 8x")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [("tiny llama (test model)", load_base_model(build_causal(Path(tmp) / "tiny")), args.reps * 8),
                ("smollm2-135m", load_base_model("smollm2-135m"), args.reps)]
        print(f"train step fwd+bwd, batch {BATCH} x {PROMPT + TOKENS} tokens; {available_cores()} cores available")
        header = "".join(f"{f'{n} thr (s)':>12}" for n in args.threads)
        print(f"{'model':<26}{'params':>12}{header}{'ratio 1/2':>11}{'chosen':>8}")
        for name, base, reps in rows:
            med = measure(base, args.threads, reps)
            ratio = med[1] / med[2] if {1, 2} <= med.keys() else float("nan")
            cells = "".join(f"{med[n]:>12.4f}" for n in args.threads)
            print(f"{name:<26}{base.n_params:>12,}{cells}{ratio:>10.2f}x{choose_threads(base.n_params):>8}")
    print("ratio > 1: more threads is faster. 'chosen' is ptune.model.base.choose_threads for this size.")


if __name__ == "__main__":
    main()
