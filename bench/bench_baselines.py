"""What the issue-11 baselines cost: the old baseline set (zero-shot, one k-shot draw, chat zero-shot, on test)
beside the new one (majority, zero-shot, `evaluate.kshot_draws` k-shot draws, chat zero-shot, calibrated twins,
on validation AND test), plus the bootstrap analysis and one prompt evaluation on test (what promotion now
adds when a champion exists: the candidate re-scored for the paired interval). Same model, same process.

Prints seconds side by side and the new/old ratio; writes bench/results/baselines_<task>.json. Uses a scratch
project directory (nothing of the real project is touched) and the project's params.yaml.
Usage: nice -n 10 python bench/bench_baselines.py [--task rotten_tomatoes]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ptune.config import load_params  # noqa: E402
from ptune.evaluation.analysis import analyse  # noqa: E402
from ptune.evaluation.baseline import run_baselines  # noqa: E402
from ptune.pipeline import stages  # noqa: E402


def timed(fn):
    """(result, seconds). Wall seconds, unless PTUNE_BENCH_CPU_TIME=1: process CPU seconds, which a machine
    shared with other jobs distorts less (under a load of 13 on 2 cores, wall time was ~4x the CPU time)."""
    clock = time.process_time if os.environ.get("PTUNE_BENCH_CPU_TIME") == "1" else time.perf_counter
    start = clock()
    out = fn()
    return out, clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rotten_tomatoes")
    parser.add_argument("--max-examples", type=int, default=None, help="override evaluate.max_examples (rows per split)")
    args = parser.parse_args()
    os.environ["PTUNE_PROJECT_DIR"] = tempfile.mkdtemp(prefix="bench-baselines-")
    extra = {"evaluate": {"max_examples": args.max_examples}} if args.max_examples else {}
    run = stages.TaskRun.build(args.task, load_params(ROOT / "params.yaml"), source="--max-examples", **extra)
    stages.fetch(run), stages.prepare(run)
    base = stages.load_base(run)
    cfg, test = run.params.evaluate, run.examples("test")
    with stages.eval_precision(run, base):
        old, old_s = timed(lambda: run_baselines(base, run.spec, run.examples("train"), test, k=cfg.k_shot,
                                                 seed=run.params.data.seed, batch_size=cfg.batch_size, progress=False))
    print(f"old baselines: {old_s:.1f} s", flush=True)
    new, new_s = timed(lambda: stages.baselines(run, base, progress=False))
    print(f"new baselines: {new_s:.1f} s", flush=True)
    prompt = base.embed(base.tokenizer("a b c d e f g h i j k l m n o p q r s t", add_special_tokens=False,
                                       return_tensors="pt")["input_ids"])[0][:20].detach()  # (20, d) stand-in prompt
    tuned, tuned_s = timed(lambda: stages.evaluate(run, base, prompt, progress=False))
    _, analysis_s = timed(lambda: analyse(run.spec, test, {**new, "tuned": tuned}, new.validation,
                                          n_resamples=cfg.bootstrap_resamples, seed=run.params.data.seed))
    row = {"task": args.task, "n_test": len(test), "n_validation": len(run.examples("validation")),
           "old_rows": list(old), "new_rows": list(new), "old_baselines_s": round(old_s, 1),
           "new_baselines_s": round(new_s, 1), "ratio_new_old": round(new_s / old_s, 2),
           "analysis_s": round(analysis_s, 2), "one_prompt_eval_on_test_s": round(tuned_s, 1),
           "added_s": round(new_s - old_s + analysis_s, 1), "kshot_draws": cfg.kshot_draws}
    print(json.dumps(row))
    print(f"\n{args.task}: baselines old {old_s:.1f} s ({len(old)} rows, test) vs new {new_s:.1f} s ({len(new)} rows, "
          f"validation + test) = {new_s / old_s:.2f}x; bootstrap analysis {analysis_s:.2f} s; "
          f"one prompt on test {tuned_s:.1f} s (promotion's extra candidate scoring when a champion exists)")
    out = ROOT / "bench" / "results" / f"baselines_{args.task}.json"
    out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
