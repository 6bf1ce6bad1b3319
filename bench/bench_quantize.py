"""One quantized-base measurement: load the base as a params file holds it (model_dtype, model_quantize), train TASK's
prompt through the `ptune train` path for STEPS steps (peak RSS, step times), and score the test split with that base
and its 95% bootstrap interval; `--eval-only` scores the prompt already in OUT/prompt instead of training one.

Usage: python bench/bench_quantize.py TASK PARAMS_FILE OUT_DIR STEPS [--no-test] [--eval-only]
Prints one line `RESULT {json}`. The README's quantization table: docs/results.md "Quantized base".
"""

from __future__ import annotations

import dataclasses
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ptune.config import project_params  # noqa: E402
from ptune.evaluation.analysis import metric_meta  # noqa: E402
from ptune.evaluation.stats import score_interval  # noqa: E402
from ptune.model.quantize import weight_bytes  # noqa: E402
from ptune.pipeline import stages  # noqa: E402
from ptune.registry.loading import load_prompt_with_base  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    task, params_file, out, steps = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    run = stages.TaskRun.build(task, project_params(params_file, must_exist=True), source="bench",
                               train={"max_steps": steps})
    run = dataclasses.replace(run, paths=dataclasses.replace(run.paths, root=out))
    started = time.perf_counter()
    base = stages.load_base(run)
    rec: dict = {"task": task, "params_file": str(params_file), "model_quantize": run.params.model_quantize,
                 "model_dtype": run.params.model_dtype, "seed": run.params.train.seed, "data_seed": run.params.data.seed,
                 "weight_bytes": weight_bytes(base.model), "load_s": round(time.perf_counter() - started, 1),
                 "load_peak_rss_mib": peak_mib()}
    if "--eval-only" not in sys.argv:
        step_s: list[float] = []
        done = stages.train(run, base, callback=lambda info: step_s.append(info.step_seconds))
        rec.update(steps=steps, train_peak_rss_mib=peak_mib(), median_step_s=statistics.median(step_s),
                   validation=done.metrics)
    if "--no-test" not in sys.argv:
        loaded = load_prompt_with_base(out / "prompt", base=base, base_spec=run.params.model)
        res = stages.evaluate(run, base, loaded.prompt, split="test", progress=False)
        examples = run.examples("test")[:res.n]
        metric = next(iter(res.metrics))
        ci = score_interval(metric, res.predictions, [ex.target for ex in examples], seed=run.params.data.seed,
                            n_resamples=run.params.evaluate.bootstrap_resamples, **metric_meta(run.spec, examples))
        rec.update(test_metric=metric, test=res.metrics[metric], ci_low=ci.low, ci_high=ci.high, test_n=res.n,
                   peak_rss_with_test_mib=peak_mib())
    print("RESULT " + json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
