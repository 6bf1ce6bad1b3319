"""Task-level effect of the precision policy: train and evaluate the same task with `precision: fp32` and
`precision: bf16` (train and evaluate), same seed, data and steps, one after the other in this process.

Prints validation and test metrics, train and evaluation seconds per precision, and the fp32/bf16 time
ratios; writes bench/results/precision_tasks.json. Uses `ptune.pipeline.stages` on the project's params.yaml
(task_overrides included), in a scratch project directory so nothing of the real project is touched.
Usage: python bench/bench_precision.py [--tasks rotten_tomatoes presupposition_nli] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import prepared_task, scratch_project  # noqa: E402
from ptune.config import load_params  # noqa: E402
from ptune.pipeline import stages  # noqa: E402

RESULT = ROOT / "bench" / "results" / "precision_tasks.json"


def one(task: str, precision: str, steps: int | None, scratch: Path, base) -> dict:
    """Train + evaluate `task` in `precision`; metrics and seconds."""
    train = {"precision": precision, **({"max_steps": steps} if steps else {})}
    run = stages.TaskRun.build(task, load_params(ROOT / "params.yaml"), run_dir=scratch / "outputs" / f"{task}-{precision}",
                               source="bench", train=train, evaluate={"precision": precision})
    trained = stages.train(run, base)
    start = time.perf_counter()
    tuned = stages.evaluate(run, base, trained.prompt, progress=False)
    return {"task": task, "precision": precision, "steps": trained.steps_run, "best_step": trained.best_step,
            "train_s": round(trained.seconds, 1), "test_eval_s": round(time.perf_counter() - start, 1),
            "validation": trained.metrics, "test": tuned.metrics, "n_test": tuned.n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["rotten_tomatoes", "presupposition_nli"])
    parser.add_argument("--steps", type=int, default=None, help="override train.max_steps (default: params.yaml)")
    args = parser.parse_args()
    scratch = scratch_project("bench-precision-")
    rows = []
    for task in args.tasks:
        run, base = prepared_task(task, ROOT / "params.yaml")
        for precision in ("fp32", "bf16"):
            rows.append(one(task, precision, args.steps, scratch, base))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'task':20} {'precision':9} {'steps':>5} {'train s':>8} {'eval s':>7}  validation / test (primary)")
    for r in rows:
        key = next(iter(r["test"]))
        val = r["validation"].get(key.replace("test/", "validation/"), float("nan"))
        print(f"{r['task']:20} {r['precision']:9} {r['steps']:>5} {r['train_s']:>8.1f} {r['test_eval_s']:>7.1f}  "
              f"{val:.4f} / {r['test'][key]:.4f} ({key}, n={r['n_test']})")
    RESULT.write_text(json.dumps({"rows": rows, "loadavg_end": os.getloadavg()}, indent=2) + "\n")
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
