"""Evaluation with the cached shared prefix vs without (`ptune.evaluation.scoring.SHARE_PREFIX`), side by side.

1. Zero-shot rank classification with a 20-token soft prompt: the prompt's keys/values once per call vs in
   every batch. Goal >= 1.2x.
2. k-shot (k = 4) hard prompt: instruction + demonstrations encoded once per call vs once per row. Goal >= 3x.
SmolLM2-135M (or the tiny test model with --tiny), real rotten_tomatoes test rows, interleaved repetitions,
medians; predictions must agree. Writes bench/results/eval_prefix.json. Asserts nothing.
Usage: python bench/bench_eval_prefix.py [--n 64] [--reps 3] [--batch 16] [--tiny]
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_rank import load  # noqa: E402

from bench.common import bench_args  # noqa: E402
from ptune.config import Params  # noqa: E402
from ptune.evaluation import scoring  # noqa: E402
from ptune.evaluation.baseline import few_shot_prefix, prompt_window  # noqa: E402
from ptune.model.soft_prompt import init_prompt  # noqa: E402
from ptune.pipeline import stages  # noqa: E402

RESULT = ROOT / "bench" / "results" / "eval_prefix.json"
GOALS = {"prompt_prefix_speedup": 1.2, "kshot_prefix_speedup": 3.0}


def timed(shared: bool, fn) -> tuple[float, list[str]]:
    scoring.SHARE_PREFIX = shared
    start = time.perf_counter()
    predictions = fn()
    return time.perf_counter() - start, predictions


def compare(name: str, fn, reps: int) -> dict:
    """Median seconds with and without the cached prefix (order alternated), and whether predictions agree."""
    times: dict[bool, list[float]] = {True: [], False: []}
    preds: dict[bool, list[str]] = {}
    timed(True, fn)  # warm-up
    for rep in range(reps):
        for shared in ((True, False) if rep % 2 else (False, True)):
            seconds, preds[shared] = timed(shared, fn)
            times[shared].append(seconds)
    plain, cached = statistics.median(times[False]), statistics.median(times[True])
    return {"name": name, "plain_s": plain, "cached_s": cached, "speedup": plain / cached,
            "agree": preds[True] == preds[False], "times_s": {str(k): v for k, v in times.items()}}


def main() -> None:
    args = bench_args(__doc__.splitlines()[0], n=64, reps=3, batch=16)
    os.environ["PTUNE_PROJECT_DIR"] = tempfile.mkdtemp(prefix="bench-eval-prefix-")
    run = stages.TaskRun.build("rotten_tomatoes", Params())
    stages.fetch(run), stages.prepare(run)
    base, label = load(args.tiny)
    spec, rows, train = run.spec, run.examples("test")[:args.n], run.examples("train")
    prompt = init_prompt(base, 20, "labels", label_words=spec.label_words, seed=0).weight.detach()  # (P, d)
    wide = dataclasses.replace(spec, max_source_tokens=prompt_window(base, spec, 4))
    demos, k_used = few_shot_prefix(base, wide, train, rows, 4, seed=0)
    cases = [("prompt_prefix", lambda: scoring.evaluate(base, spec, rows, prompt, batch_size=args.batch,
                                                         progress=False).predictions),
             ("kshot_prefix", lambda: scoring.evaluate(base, wide, rows, prefix=demos, batch_size=args.batch,
                                                        progress=False).predictions)]
    results = [compare(name, fn, args.reps) for name, fn in cases]
    print(f"model: {label}; {len(rows)} rows; batch {args.batch}; k-shot uses {k_used} demonstrations; median of {args.reps}")
    out = {"model": label, "n": len(rows), "batch": args.batch, "k_used": k_used, "cases": results,
           "goals": GOALS, "loadavg": os.getloadavg()}
    for r in results:
        key = f"{r['name']}_speedup"
        out[key] = r["speedup"]
        met = "yes" if r["speedup"] >= GOALS[key] else "no"
        print(f"  {key:24} {r['speedup']:6.2f}x (goal >= {GOALS[key]}, met: {met})  plain {r['plain_s']:.2f} s, "
              f"cached {r['cached_s']:.2f} s, predictions agree: {r['agree']}")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
