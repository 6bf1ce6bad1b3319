"""What the flows share: the TaskRun from params.yaml + form, the data steps, run directories and summary markdown."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows.params import TrainFlowParams
from ptune.config import project_params
from ptune.data.splits import offline_refusal
from ptune.evaluation.interpret import INTERPRETATION_DIR
from ptune.paths import runs_dir
from ptune.pipeline.stages import TaskRun
from ptune.registry.tracking import experiment_runs_url
from tasks.data import fetch_task_data, prepare_split, validate_split, validation_report
from tasks.events import note_data_version
from tasks.logs import attach_ptune_logs
from tasks.timeouts import timeout_for
from tasks.training import artifact_key

attach_ptune_logs()  # every flow imports this module: ptune's log lines reach the run logs and the console


def timed(task: Any, run: TaskRun, step: str, **options: Any) -> Any:
    """`task` with the time budget of `step` for this run (params.yaml `timeouts:`; tasks/timeouts.py)."""
    return task.with_options(timeout_seconds=timeout_for(run, step), **options)


def task_run(form: Any, task_name: str) -> TaskRun:
    """The task resolved once: the form's params file (task_overrides applied), then the form's non-empty
    fields on top, writing under outputs/<task>/prefect/<flow run id>."""
    changes: dict[str, Any] = {"model": getattr(form, "model", None)}
    if hasattr(form, "train"):
        changes["train"] = form.train.as_dict()
    if getattr(form, "max_eval_examples", None) is not None:
        changes["evaluate"] = {"max_examples": form.max_eval_examples}
    return TaskRun.build(task_name, project_params(form.params_file), run_dir=run_dir(task_name), source="form",
                         **changes)


def check_data(run: TaskRun, refresh: bool = False, emit: bool = False) -> State | None:
    """Fetch, prepare and validate; on a failed validation publish the report and return the Failed state.
    Valid data's version is noted in Prefect; with `emit`, a changed version emits `ptune.data.changed`.
    A hub task that must be fetched while offline is refused first, Failed with the one-line reason."""
    refusal = offline_refusal(run.spec, refresh)
    if refusal is not None:
        return Failed(message=refusal)
    options = {"refresh_cache": True} if refresh else {}
    timed(fetch_task_data, run, "fetch")(run)
    timed(prepare_split, run, "prepare", **options)(run)
    state = timed(validate_split, run, "validate", **options)(run, return_state=True)
    if not state.is_failed():
        note_data_version(run, emit)
        return None
    error = state.result(raise_on_failure=False)
    create_markdown_artifact(validation_report(run.name) or f"```\n{error}\n```",
                             key=artifact_key("validation", run.name),
                             description=f"Validation of `{run.name}` FAILED: nothing was trained")
    return Failed(message=f"validation failed, nothing trained: {error}")


def run_dir(task_name: str) -> Path:
    """outputs/<task>/prefect/<flow run id>: task retries resume its checkpoint, a new flow run starts fresh."""
    return runs_dir() / task_name / "prefect" / (flow_run.get_id() or "local")[:8]


def train_form(nightly: Any, task_name: str) -> TrainFlowParams:
    """The train_task_flow form for one task of a nightly run (same file, model and overrides)."""
    return TrainFlowParams(task=task_name, params_file=nightly.params_file, model=nightly.model,
                           train=nightly.train, max_eval_examples=nightly.max_eval_examples, promote=nightly.promote,
                           keep_unchanged_champion=not nightly.retrain_unchanged)


def mlflow_ui() -> str:
    return os.environ.get("PTUNE_MLFLOW_UI", "http://127.0.0.1:5000").rstrip("/")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def train_summary_markdown(summary: Mapping[str, Any], table: str) -> str:
    """The train_task_flow artifact: results, promotion decision and where to look in MLflow."""
    ui, task = mlflow_ui(), summary["task"]
    run_url = f"{ui}/#/experiments/{summary['experiment_id']}/runs/{summary['run_id']}"
    version_url = f"{ui}/#/models/{summary['model']}/versions/{summary['version']}"
    resumed = summary.get("resumed_from")
    table = mlflow_links(table, run_url)
    return "\n".join([
        f"# `{task}`: {summary['decision']}", "", table.replace(f"## {task}", "### Test results", 1), "",
        f"**Promotion**: {summary['decision']} — {summary['reason']}", "",
        f"**MLflow**: [run {summary['run_id'][:8]}]({run_url}) · [model {summary['model']} v{summary['version']}]"
        f"({version_url}) · [all runs of `{task}`]({experiment_runs_url(ui, summary['experiment_id'])}) · "
        f"`{summary['model_uri']}`", "",
        f"![every approach with its 95% interval, and the validation curve]({summary.get('chart_url', '')})", "",
        f"Training: {summary['steps']} steps in {summary['train_seconds']:.0f} s, best step {summary['best_step']}"
        + (f", resumed from step {resumed}" if resumed else "") + f"; base model `{summary['base_model']}`.",
    ])


def mlflow_links(report_md: str, run_url: str) -> str:
    """The report's relative link to the interpretation (a file path, which leads nowhere in the Prefect UI),
    made the MLflow page of the run's artifact `interpretation/interpretation.md` (logged with the model card)."""
    relative = f"(../{INTERPRETATION_DIR}/interpretation.md)"
    return report_md.replace(relative, f"({run_url}/artifactPath/{INTERPRETATION_DIR}/interpretation.md)")


def fmt_interval(found: Any) -> str:
    """[diff, low, high] -> "+0.0450 [+0.0125, +0.0775]"; "-" when absent."""
    return "-" if not found else f"{found[0]:+.4f} [{found[1]:+.4f}, {found[2]:+.4f}]"


def nightly_markdown(rows: list[Mapping[str, Any]]) -> str:
    """The nightly artifact: one row per task, failures with their message."""
    lines = ["| task | state | metric | soft prompt | best baseline | gain [95% CI] | vs champion [95% CI] | n | "
             "decision | version |", "|---" * 10 + "|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['state']} | {r.get('metric', '-')} | {_fmt(r.get('tuned'))} | "
                     f"{_fmt(r.get('best_baseline'))} | {fmt_interval(r.get('gain_ci'))} | "
                     f"{fmt_interval(r.get('champion_ci'))} | {r.get('n', '-')} | {r.get('decision', '-')} | "
                     f"{r.get('version', '-')} |")
    failed = [r for r in rows if r["state"] != "Completed"]
    lines += ["", f"{len(rows) - len(failed)} of {len(rows)} tasks completed."]
    lines += [f"- **{r['task']}** failed: {r.get('message', '')[:2000]}" for r in failed]
    return "\n".join(lines)
