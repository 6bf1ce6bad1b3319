"""train_task_flow: one task from raw data to a registered, possibly promoted, soft prompt."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import State

from flows.common import check_data, mlflow_ui, task_run, timed, train_summary_markdown
from flows.failure import HOOKS
from flows.params import TrainFlowParams
from flows.prefect_setup import gpu_slot
from ptune.evaluation.chart import CHART_NAME
from ptune.evaluation.stats import Interval
from ptune.pipeline.stages import Reported, TaskRun, Trained
from ptune.registry.model_registry import RegisteredPrompt
from ptune.registry.promotion import Decision
from ptune.registry.tracking import ensure_experiment
from tasks.registry import champion_data_version, promote_if_better, register_prompt
from tasks.training import (
    artifact_key,
    evaluate_prompt,
    load_model,
    run_baselines,
    train_prompt,
    write_report,
)


def _run_name() -> str:
    form = flow_run.parameters.get("params")
    task = getattr(form, "task", None) or (form or {}).get("task", "?")
    return f"train-{task}"


@flow(name="train-task", flow_run_name=_run_name, result_serializer="json", **HOOKS)
def train_task_flow(params: TrainFlowParams) -> dict[str, Any] | State:
    """Train, evaluate, register and promote a soft prompt for one task.

    1. Read params.yaml and apply the form's overrides.
    2. Fetch, prepare and validate the data; a failed validation publishes its report and ends Failed.
       With `keep_unchanged_champion`, stop here when @champion was trained on this data version.
       Every step has a time budget (params.yaml `timeouts:`); a failure or crash writes `failure-*`.
    3. Take the GPU slot (concurrency limit `ptune-gpu`) and load the frozen base model.
    4. Train the soft prompt (progress artifact; MLflow run; checkpoints let a retry resume).
    5. Evaluate it on the test split, and the hard-prompt baselines on the same model and split.
    6. Write the report (tuned vs baselines) next to the prompt.
    7. Register the prompt as a new version of `ptune-<task>` (MLflow run closed with the report).
    8. Promote it to @champion if it beats the baselines and the current champion.
    9. Publish the results table, the decision and the MLflow links.
    """
    run = task_run(params, params.task)                                              # 1
    failed = check_data(run, refresh=params.refresh_data)                            # 2
    if failed is not None:
        return failed
    if params.keep_unchanged_champion and (kept := unchanged_champion(run)) is not None:
        return kept
    with gpu_slot():
        base = timed(load_model, run, "load")(run)                                   # 3
        trained = timed(train_prompt, run, "train")(run, base)                       # 4
        tuned = timed(evaluate_prompt, run, "evaluate")(run, base, trained)          # 5
        baselines = timed(run_baselines, run, "baselines")(run, base)
        reported = timed(write_report, run, "report")(run, trained, tuned, baselines)  # 6
        registered = timed(register_prompt, run, "register")(run, trained, reported)  # 7
        decision = (timed(promote_if_better, run, "promote")(run, registered.version, base)  # 8
                    if params.promote else None)
    return publish_summary(run, trained, reported, registered, decision, base.spec)  # 9


UNCHANGED = "data unchanged, champion kept"


def unchanged_champion(run: TaskRun) -> dict[str, Any] | None:
    """The "data unchanged, champion kept" row when @champion was trained on the data just checked."""
    champion = champion_data_version(run)
    if champion is None or champion[1] != run.data_version:
        return None
    get_run_logger().info("%s: %s (v%s, data version %s)", run.name, UNCHANGED, champion[0], champion[1])
    return {"task": run.name, "state": "Completed", "decision": UNCHANGED, "version": champion[0],
            "data_version": champion[1], "seconds": 0.0}


def publish_summary(run: TaskRun, trained: Trained, reported: Reported, registered: RegisteredPrompt,
                    decision: Decision | None, base_spec: str) -> dict[str, Any]:
    """The flow's markdown artifact and return value (the nightly flow tabulates these)."""
    tuned, stats = reported.tuned, reported.stats
    metric = next(iter(tuned.metrics))
    summary = {
        "task": trained.task, "metric": metric, "tuned": tuned.metrics[metric],
        "best_baseline": stats.get(f"baseline/best/{metric}"),  # chosen on validation, scored on test
        "gain_ci": _pair(stats, f"gain/{metric}"), "n": tuned.n,
        "champion_ci": _interval(decision.champion_interval) if decision else None,
        "decision": decision.alias if decision else "not promoted",
        "reason": decision.reason if decision else "the promotion step was switched off in the form",
        "model": registered.name, "version": registered.version, "model_uri": registered.model_uri,
        "run_id": registered.run_id, "experiment_id": ensure_experiment(trained.task),
        "steps": trained.steps_run, "best_step": trained.best_step, "train_seconds": trained.seconds,
        "trainable": trained.trainable,
        "chart_url": f"{mlflow_ui()}/get-artifact?path=report/{CHART_NAME}&run_uuid={registered.run_id}",
        "resumed_from": trained.resumed_from, "prompt_dir": str(trained.prompt_dir), "base_model": base_spec,
    }
    table = reported.files.markdown.read_text(encoding="utf-8")
    if decision is not None and decision.champion_interval is not None:
        table += f"- Tuned - champion v{decision.champion_version}: {decision.champion_interval.text()}.\n"
    create_markdown_artifact(train_summary_markdown(summary, table), key=artifact_key("train", trained.task),
                             description=f"ptune `{trained.task}`: tuned prompt vs baselines")
    create_image_artifact(summary["chart_url"], key=artifact_key("chart", trained.task),  # the report PNG, via MLflow
                          description=f"ptune `{trained.task}`: every approach with its 95% interval")
    return summary


def _pair(stats: dict[str, float], key: str) -> list[float] | None:
    """[value, ci_low, ci_high] of a report key with its interval, or None when the report has none."""
    found = [stats.get(key), stats.get(f"{key}/ci_low"), stats.get(f"{key}/ci_high")]
    return None if None in found else found


def _interval(ci: Interval | None) -> list[float] | None:
    return None if ci is None else [ci.diff, ci.low, ci.high]
