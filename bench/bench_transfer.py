"""Prompt transfer between tasks (SPoT): does starting TARGET's prompt from SOURCE's champion get there sooner?

In a throwaway project (its own data dir and SQLite registry; the package cache is shared), on the offline
tasks: train SOURCE's prompt and make it @champion; score the hard-prompt baselines on TARGET's validation
split; then train TARGET twice with the same settings, from its usual init and with `--transfer-from SOURCE`,
side by side in one process. Prints, per arm: validation score at step 0 (no training), the first evaluated
step whose validation score reaches the best baseline's, the best validation score, and the final test score.
Usage: python bench/bench_transfer.py [--source intent] [--target rotten_tomatoes] [--steps 60]
       [--eval_every 10] [--max_examples 100] [--tiny]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="intent")
    parser.add_argument("--target", default="rotten_tomatoes")
    for name, value in (("steps", 60), ("eval_every", 10), ("max_examples", 100), ("max_train", 600)):
        parser.add_argument(f"--{name}", type=int, default=value)
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run, not a result)")
    return parser.parse_args()


def model_spec(tiny: bool, tmp: Path) -> str:
    if not tiny:
        return "smollm2-135m"
    from tests.tiny_models import build_causal
    return str(build_causal(tmp / "tiny"))


def task_run(stages, params, task: str, args: argparse.Namespace, tmp: Path, model: str):
    train = {"max_steps": args.steps, "eval_every": args.eval_every, "patience": 0, "checkpoint_every": 0}
    run = stages.TaskRun.build(task, params, run_dir=tmp / "runs" / task, model=model, source="bench",
                               train=train, evaluate={"max_examples": args.max_examples})
    stages.fetch(run)
    stages.prepare(run)
    return run


def arm(stages, run, base, baseline: float) -> dict:
    """Train `run` (its init as configured); steps to reach `baseline` on validation; final test score."""
    from ptune.model.soft_prompt import init_prompt

    cfg, key = run.params.train, f"validation/{run.spec.metrics[0]}"
    start = init_prompt(base, cfg.n_tokens, cfg.init, label_words=run.spec.label_words, path=cfg.init_path,
                        seed=cfg.seed).weight.detach()
    curve = [(0, stages.evaluate(run, base, start, split="validation", progress=False).metrics[key])]
    began = time.perf_counter()
    trained = stages.train(run, base, callback=lambda info: info.metrics and curve.append((info.step, info.metrics[key])))
    seconds = time.perf_counter() - began
    reached = next((step for step, value in curve if value >= baseline), None)
    test = stages.evaluate(run, base, trained.prompt, progress=False).metrics[f"test/{run.spec.metrics[0]}"]
    return {"step0": curve[0][1], "reached": reached, "best": max(v for _, v in curve), "test": test,
            "seconds": seconds}


def main() -> None:
    args = parse()
    tmp = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    os.environ.update(PTUNE_PROJECT_DIR=str(tmp), MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlruns.db'}",
                      HF_HUB_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true")
    from ptune.config import Params
    from ptune.pipeline import stages
    from ptune.registry import model_registry
    from ptune.studies import transfer

    params = Params().with_overrides("bench", data={"max_train": args.max_train})
    model = model_spec(args.tiny, tmp)
    source = task_run(stages, params, args.source, args, tmp, model)
    base = stages.load_base(source)
    print(f"model {model}, {args.steps} steps, eval every {args.eval_every}, {args.max_examples} eval examples")
    trained = stages.train(source, base)
    registered = model_registry.register_dir(trained.prompt_dir, source.spec)
    model_registry.set_alias(args.source, "champion", registered.version)
    target = task_run(stages, params, args.target, args, tmp, model)
    found = stages.baselines(target, base, split="validation", progress=False)
    key = f"validation/{target.spec.metrics[0]}"
    best = max(found.values(), key=lambda r: r.metrics[key]).metrics[key]
    scratch = arm(stages, target, base, best)
    moved = dataclasses.replace(target, paths=stages.RunPaths(tmp / "runs" / "transfer", target.paths.metrics_file))
    moved = transfer.with_transfer(moved, base, args.source)
    warm = arm(stages, moved, base, best)
    print(f"\n{args.target}: best hard-prompt baseline {key} = {best:.4f}\n")
    print(f"| {args.target} | {key} at step 0 | steps to reach baseline | best {key} | test/{target.spec.metrics[0]} "
          "| train seconds |\n|---|---|---|---|---|---|")
    for name, row in ((f"init {target.params.train.init}", scratch), (f"transfer from {args.source}", warm)):
        reached = row["reached"] if row["reached"] is not None else f"not in {args.steps}"
        print(f"| {name} | {row['step0']:.4f} | {reached} | {row['best']:.4f} | {row['test']:.4f} | {row['seconds']:.0f} |")


if __name__ == "__main__":
    main()
