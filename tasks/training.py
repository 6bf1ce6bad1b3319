"""Model stages as Prefect tasks: load the frozen base, train the soft prompt, evaluate it, run the baselines.

These tasks take the loaded base model as an argument, so none of them hashes its inputs (NO_CACHE) or
persists its result: a model is not something to fingerprint or pickle on every call.
"""

from __future__ import annotations

import re

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from ptune.errors import ModelError
from ptune.evaluation.baseline import BaselineResults
from ptune.evaluation.scoring import EvalResult
from ptune.model.base import BaseModel
from ptune.pipeline import stages
from ptune.pipeline.ranks import train_on_ranks
from ptune.training.history import StepInfo
from tasks.logs import EvalProgress
from tasks.policies import retry_on, retry_unless

MODEL_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=retry_on(OSError, ModelError), **MODEL_TASK)
def load_model(run: stages.TaskRun) -> BaseModel:
    """The frozen base model (built-in name, local dir or hub id). Retried once: loading is file I/O."""
    return stages.load_base(run)


class TrainProgress:
    """`stages.train` callback: a Prefect progress artifact (step/max_steps) and a log line per evaluation."""

    def __init__(self, task_name: str, max_steps: int) -> None:
        self.max_steps, self.shown = max_steps, -1.0
        self.logger = get_run_logger()
        self.artifact_id = create_progress_artifact(
            0.0, key=artifact_key("train-progress", task_name), description=f"Training `{task_name}`: step 0")

    def __call__(self, info: StepInfo) -> None:
        percent = min(100.0, 100.0 * info.step / self.max_steps)
        if info.metrics or percent - self.shown >= 5.0:  # one API call per 5 % (and per evaluation)
            self.shown = percent
            update_progress_artifact(self.artifact_id, percent, description=f"step {info.step}/{self.max_steps}, "
                                     f"loss {info.loss:.4f}" + (f", {info.metrics}" if info.metrics else ""))
        if info.metrics:
            self.logger.info("step %d: loss %.4f, %s (step %.2f s, validation %.1f s)", info.step, info.loss,
                             info.metrics, info.step_seconds, info.validation_seconds or 0.0)

    def finish(self, steps: int) -> None:
        update_progress_artifact(self.artifact_id, 100.0, description=f"done: {steps} steps")


def flow_run_tags() -> dict[str, str]:
    """MLflow run tags linking back to the Prefect flow run (id, name, UI page); {} outside a flow run."""
    if flow_run.get_id() is None:
        return {}
    name, url = str(flow_run.get_name()), str(flow_run.get_flow_run_ui_url())
    tags = {"prefect.flow_run_id": str(flow_run.get_id()), "prefect.flow_run_name": name,
            "mlflow.note.content": f"Prefect flow run `{name}`"}
    if url.startswith("http"):  # no UI URL (a temporary local server): "None/flow-runs/..."; leave it out
        tags.update({"prefect.flow_run_url": url, "mlflow.note.content": f"Prefect flow run [{name}]({url})"})
    return tags


@task(retries=1, retry_delay_seconds=1, retry_condition_fn=retry_unless(), **MODEL_TASK)
def train_prompt(run: stages.TaskRun, base: BaseModel, nproc: int | None = None) -> stages.Trained:
    """Train the soft prompt (MLflow run + progress artifact); checkpoints let a retry resume. `nproc` > 1
    (default: the flow form's `nproc`): data-parallel on that many local processes, each loading its own
    base model (`base` is kept for evaluation); a failed rank fails the try and the retry resumes."""
    nproc = nproc or form_nproc()
    progress = TrainProgress(run.name, run.params.train.max_steps)
    options = {"callback": progress, "track": True, "run_name": flow_run.get_name(), "tags": flow_run_tags()}
    trained = train_on_ranks(run, nproc, **options) if nproc > 1 else stages.train(run, base, **options)
    progress.finish(trained.steps_run)
    return trained


def form_nproc() -> int:
    """`nproc` of the flow run's form (flows.params.TrainFlowParams); 1 outside a flow run or without one."""
    form = flow_run.parameters.get("params") if flow_run.get_id() is not None else None
    value = form.get("nproc") if isinstance(form, dict) else getattr(form, "nproc", None)
    return int(value or 1)


@task(**MODEL_TASK)
def evaluate_prompt(run: stages.TaskRun, base: BaseModel, trained: stages.Trained) -> EvalResult:
    """The tuned prompt on the test split (progress artifact `eval-progress-<task>`, log lines every ~10 %)."""
    with EvalProgress(artifact_key("eval-progress", run.name), f"Evaluating `{run.name}`"):
        return stages.evaluate(run, base, trained.prompt, progress=False)


@task(**MODEL_TASK)
def run_baselines(run: stages.TaskRun, base: BaseModel) -> BaselineResults:
    """Hard-prompt baselines (zero-shot, k-shot, ...) on the same frozen model and test split (progress artifact
    `baselines-progress-<task>`)."""
    with EvalProgress(artifact_key("baselines-progress", run.name), f"Baselines of `{run.name}`", passes=3):
        return stages.baselines(run, base, progress=False)


@task(**MODEL_TASK)
def write_report(run: stages.TaskRun, trained: stages.Trained, tuned: EvalResult,
                 baselines: BaselineResults) -> stages.Reported:
    """Tuned vs baselines as report.md, metrics.json, a chart and predictions.jsonl next to the prompt."""
    return stages.report(run, tuned, baselines, trained.trainable)
