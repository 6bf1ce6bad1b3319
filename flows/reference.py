"""reference_flow: train one task's reference model (LoRA, full or multi-task fine-tuning), the ceiling its
soft prompt is measured against, and show it in the task report with the gap the prompt closes."""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.common import timed
from flows.failure import HOOKS
from flows.params import ReferenceParams
from flows.prefect_setup import gpu_slot
from ptune.config import project_params
from ptune.errors import DataError
from ptune.evaluation.references import NOT_ABOVE
from ptune.pipeline.stages import Reported, TaskRun
from ptune.studies import reference
from tasks.reference import rereport, train_reference_model
from tasks.timeouts import reference_timeout
from tasks.training import artifact_key, load_model


def _run_name() -> str:
    form = flow_run.parameters.get("params")
    field = form.get if isinstance(form, dict) else (lambda key: getattr(form, key, None))
    return f"reference-{field('task') or '?'}-{field('method') or '?'}"


@flow(name="reference", flow_run_name=_run_name, result_serializer="json", **HOOKS)
def reference_flow(params: ReferenceParams) -> dict[str, Any]:
    """Train a reference model on one task; it is never registered, so it never competes for @champion.

    1. Read params.yaml (the form's file); the task, and the mixed tasks of a multitask run, must be prepared
       (the `validate` deployment, or `ptune prepare`).
    2. Take the GPU slot and load the frozen base model (it is deep-copied, never trained in place).
    3. Train on the same data, loss, steps and batch size as prompt tuning; keep the best model on validation,
       score it once on test: MLflow run tagged ptune.kind=reference, outputs/<task>/reference/<method>.json.
    4. If the task has a tuned prompt and report (outputs/<task>/), re-render the report with the reference row.
    5. Publish the method, steps, metrics, MLflow run and gap closed.
    """
    run, cfg, mix = resolve(params)                                                                   # 1
    with gpu_slot():
        base = timed(load_model, run, "load")(run)                                                    # 2
        budget = reference_timeout(run, cfg.method, cfg.steps, cfg.batch_size, cfg.eval_every)
        done = train_reference_model.with_options(timeout_seconds=budget)(run, base, cfg, mix)       # 3
        state = timed(rereport, run, "rereport")(run, base, return_state=True)                       # 4
    reported = state.result(raise_on_failure=False)
    if not isinstance(reported, Reported):
        if state.is_failed():
            get_run_logger().warning("the task report was not re-rendered (%s); run `ptune report %s`",
                                     reported, run.name)
        reported = None
    summary = reference_summary(done, run, reported)                                                  # 5
    create_markdown_artifact(reference_markdown(summary), key=artifact_key("reference", run.name, cfg.method),
                             description=f"ptune reference model `{cfg.method}` of `{run.name}`")
    return summary


def resolve(params: ReferenceParams) -> tuple[TaskRun, reference.ReferenceConfig, list[TaskRun]]:
    """The task, its reference settings and the other tasks of a multitask mixture; every task prepared."""
    project = project_params(params.params_file)
    run = TaskRun.build(params.task, project, source="form", model=params.model)
    cfg = reference.ReferenceConfig.for_run(run, params.method, steps=params.steps, batch_size=params.batch_size,
                                            lr=params.lr)
    mix = reference.mix_runs(run, project, params.method, params.mix)
    try:
        reference.check_prepared([run, *mix])
    except DataError as exc:
        raise DataError(f"{exc}. From the Prefect UI: run the `validate` deployment for each of them") from exc
    return run, cfg, mix


def reference_summary(done: reference.Reference, run: TaskRun, reported: Reported | None) -> dict[str, Any]:
    """The flow's return value: where the model's numbers are, and the gap closed when a report was drawn."""
    gap: float | str | None = None
    if reported is not None:
        flat = json.loads(reported.files.metrics.read_text(encoding="utf-8"))
        gap = flat.get(f"reference/{done.method}/gap_closed", NOT_ABOVE)
    return {"task": done.task, "method": done.method, "steps": done.steps, "best_step": done.best_step,
            "validation": done.validation, "test": done.metrics, "n": done.n, "trainable": done.trainable,
            "mixture": done.mixture, "seconds": round(done.seconds, 1), "mlflow_run": done.run_id,
            "file": str(done.path), "gap_closed": gap,
            "report": str(reported.files.markdown) if reported is not None else None}


def reference_markdown(summary: dict[str, Any]) -> str:
    """The flow's artifact: the reference model's numbers and, when the report was re-rendered, its gap."""
    rows = [f"| {k} | {v:.4f} |" for k, v in {**summary["validation"], **summary["test"]}.items()]
    gap = summary["gap_closed"]
    gap_line = (f"Gap closed by the tuned prompt: **{gap:.3f}** (report `{summary['report']}`)."
                if isinstance(gap, float) else f"Gap closed: {gap} (report `{summary['report']}`)." if gap else
                f"Gap closed: not computed (no tuned prompt and report in outputs/{summary['task']}/); "
                f"run `ptune report {summary['task']}` after training one.")
    return "\n".join([
        f"# Reference model `{summary['method']}` of `{summary['task']}`", "",
        f"Steps run: {summary['steps']}, best on validation at step {summary['best_step']}; "
        f"{summary['trainable']:,} trainable parameters; {summary['seconds']} s; "
        "train rows: " + ", ".join(f"{t} {n}" for t, n in summary["mixture"].items()) + ".", "",
        "| metric | value |", "|---|---|", *rows, "", gap_line, "",
        f"MLflow run `{summary['mlflow_run']}` (tag `ptune.kind=reference`, never registered); "
        f"numbers in `{summary['file']}`.",
    ])
