"""Prompt ensembles (Lester et al. §6, Table 3): K prompts of one task, scored together in one batch.

In a throwaway project (own data dir and SQLite store; the package cache is shared), for each task: train K
prompts with seeds 0..K-1, then on the test split print each member, the best single prompt, the mean of K
and the ensemble (mean of rank log-probabilities, and majority vote), and the time of the one-batch
ensemble evaluation next to K separate single-prompt evaluations of the same prompts.
Usage: python bench/bench_ensemble.py [--tasks rotten_tomatoes,intent] [--k 3] [--steps 60] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="rotten_tomatoes,intent")
    for name, value in (("k", 3), ("steps", 60), ("eval_every", 20), ("max_examples", 200), ("max_train", 600)):
        parser.add_argument(f"--{name}", type=int, default=value)
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run, not a result)")
    return parser.parse_args()


def one_task(task: str, args: argparse.Namespace, tmp: Path, model: str, base) -> tuple[list[str], object]:
    from ptune.config import Params
    from ptune.pipeline import stages
    from ptune.studies import ensemble

    params = Params().with_overrides("bench", data={"max_train": args.max_train})
    run = stages.TaskRun.build(task, params, run_dir=tmp / "runs" / task, model=model, source="bench",
                               train={"max_steps": args.steps, "eval_every": args.eval_every, "patience": 0,
                                      "checkpoint_every": 0}, evaluate={"max_examples": args.max_examples})
    stages.fetch(run), stages.prepare(run)
    base = base or stages.load_base(run)
    trained = ensemble.train_ensemble(run, base, args.k)
    began = time.perf_counter()
    found = ensemble.evaluate_ensemble(run, base, trained.directory)
    together = time.perf_counter() - began
    began = time.perf_counter()
    for member in trained.members:
        stages.evaluate(run, base, member.prompt, progress=False)
    apart = time.perf_counter() - began
    vote = ensemble.evaluate_ensemble(run, base, trained.directory, method="vote").ensemble
    key = found.primary
    members = " / ".join(f"{m.metrics[key]:.4f}" for m in found.members)
    return [f"| {task} ({key}, n={found.ensemble.n}) | {members} | {found.best_single:.4f} | {found.mean_single:.4f} "
            f"| {found.ensemble.metrics[key]:.4f} | {vote.metrics[key]:.4f} | {together:.1f} s vs {apart:.1f} s |"], base


def main() -> None:
    args = parse()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ensemble-"))
    os.environ.update(PTUNE_PROJECT_DIR=str(tmp), MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlruns.db'}",
                      HF_HUB_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true")
    model = "smollm2-135m"
    if args.tiny:
        from tests.tiny_models import build_causal
        model = str(build_causal(tmp / "tiny"))
    rows, base = [], None
    for task in args.tasks.split(","):
        lines, base = one_task(task, args, tmp, model, base)
        rows += lines
    print(f"\nmodel {model}, K={args.k}, {args.steps} steps each, seeds 0..{args.k - 1}\n")
    print("| task | members | best single | mean of K | ensemble (mean) | ensemble (vote) | eval: one batch vs K passes |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
