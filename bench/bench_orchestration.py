"""Orchestration overhead: wall time of `train_task_flow` vs the same library calls made directly, same task,
same steps, same settings; each path in its own fresh project dir and MLflow store. Goal: ratio <= 1.15.

Prints both totals, the ratio, and per step the direct time next to the Prefect task's run time, so the
extra time is located: per-task orchestration (state changes, logs, artifacts) and flow-level work
outside tasks (params, run naming, GPU slot, summary artifact). The Prefect API's start-up (ephemeral
server when PREFECT_API_URL is unset) is paid once per process and reported apart.

Model: SmolLM2-135M when it is cached (else the tiny test model, `--tiny`); task: rotten_tomatoes.
Usage: python bench/bench_orchestration.py [--steps 10] [--examples 64] [--repeat 2] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "true",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
                   "GX_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
                   "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)
if not os.environ.get("PREFECT_API_URL"):  # fresh ephemeral API: no cached task results from earlier runs
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="bench-prefect-home-")

import yaml  # noqa: E402

TASK = "rotten_tomatoes"


def write_project(root: Path, model: str, steps: int, examples: int) -> Path:
    params = {"model": model, "run_tasks": [TASK],
              "data": {"seed": 0, "max_train": 400, "max_validation": 32, "max_test": examples, "min_class_share": 0.05},
              "train": {"n_tokens": 20, "init": "labels", "batch_size": 8, "max_steps": steps, "eval_every": steps,
                        "checkpoint_every": steps, "patience": 0, "seed": 0},
              "evaluate": {"batch_size": 16, "max_examples": examples, "k_shot": 2}, "promote": {"min_gain": 0.0}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


@contextmanager
def project(root: Path):
    saved = {k: os.environ.get(k) for k in ("PTUNE_PROJECT_DIR", "MLFLOW_TRACKING_URI")}
    os.environ.update(PTUNE_PROJECT_DIR=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlruns.db'}")
    try:
        yield root
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def direct(root: Path) -> dict[str, float]:
    """The `ptune.pipeline.stages` calls of train_task_flow, in order, without Prefect; seconds per step."""
    from ptune.config import load_params
    from ptune.pipeline import stages

    times: dict[str, float] = {}

    @contextmanager
    def step(name: str):
        start = time.perf_counter()
        yield
        times[name] = time.perf_counter() - start

    with step("params"):
        run = stages.TaskRun.build(TASK, load_params(root / "params.yaml"), run_dir=root / "outputs" / TASK / "direct")
    with step("fetch_task_data"):
        stages.fetch(run)
    with step("prepare_split"):
        stages.prepare(run)
    with step("validate_split"):
        stages.validate(run)
    with step("load_model"):
        base = stages.load_base(run)
    with step("train_prompt"):
        trained = stages.train(run, base, track=True)
    with step("evaluate_prompt"):
        tuned = stages.evaluate(run, base, trained.prompt, progress=False)
    with step("run_baselines"):
        found = stages.baselines(run, base, progress=False)
    with step("write_report"):
        reported = stages.report(run, tuned, found, trained.trainable)
    with step("register_prompt"):
        version = stages.register(run, trained, reported).version
    with step("promote_if_better"):
        stages.promote(run, version, base)
    return times


def with_prefect(root: Path) -> tuple[float, dict[str, float]]:
    """train_task_flow; total seconds and each task run's run time from the API."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.params import TrainFlowParams
    from flows.train import train_task_flow

    start = time.perf_counter()
    state = train_task_flow(TrainFlowParams(task=TASK, refresh_data=True), return_state=True)  # no cache hits
    total = time.perf_counter() - start
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return total, {r.name.rsplit("-", 1)[0]: r.total_run_time.total_seconds() for r in runs}


def warm_up(model: str) -> float:
    """Imports, the model's files in the page cache, and the Prefect API: paid once, by neither path."""
    import great_expectations  # noqa: F401
    import mlflow  # noqa: F401
    from prefect import flow

    from ptune.model.base import load_base_model

    load_base_model(model)
    start = time.perf_counter()
    flow(name="bench-warm-up")(lambda: None)()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--examples", type=int, default=64, help="test examples (tuned and each baseline)")
    parser.add_argument("--tiny", action="store_true", help="use the tiny random test model")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each path, alternated; best time kept")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    if args.tiny:
        from tests.tiny_models import build_causal

        model = str(build_causal(work / "tiny"))
    else:
        model = "smollm2-135m"
    api_start = warm_up(model)
    steps: dict[str, float] = {}
    task_times: dict[str, float] = {}
    t_direct = t_flow = float("inf")
    for i in range(args.repeat):  # alternate the paths; keep each one's best time (the machine is shared)
        with project(write_project(work / f"direct-{i}", model, args.steps, args.examples)) as root:
            start = time.perf_counter()
            times = direct(root)
            t_direct = min(t_direct, time.perf_counter() - start)
            steps = {k: min(v, steps.get(k, v)) for k, v in times.items()}
        with project(write_project(work / f"prefect-{i}", model, args.steps, args.examples)) as root:
            total, times = with_prefect(root)
            t_flow = min(t_flow, total)
            task_times = {k: min(v, task_times.get(k, v)) for k, v in times.items()}
    print(f"model {model}, task {TASK}, {args.steps} steps, {args.examples} test examples, best of {args.repeat}; "
          f"Prefect API: {os.environ.get('PREFECT_API_URL') or 'ephemeral'} (first flow run incl. start-up: {api_start:.1f} s)")
    print(f"\n{'step':<20}{'direct s':>10}{'task run s':>12}{'extra s':>10}")
    for name, seconds in steps.items():
        if name in task_times:
            print(f"{name:<20}{seconds:>10.2f}{task_times[name]:>12.2f}{task_times[name] - seconds:>10.2f}")
    outside = max(0.0, t_flow - sum(task_times.values()))  # approximate: totals and steps are separate minima
    print(f"{'outside tasks':<20}{steps.get('params', 0):>10.2f}{outside:>12.2f}{outside - steps.get('params', 0):>10.2f}"
          "   (params, GPU slot, subflow bookkeeping, artifacts, state changes)")
    print(f"\ntotal: direct {t_direct:.1f} s, train_task_flow {t_flow:.1f} s, ratio {t_flow / t_direct:.3f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
