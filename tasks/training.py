"""Model stages as Prefect tasks: load the frozen base, train the soft prompt, evaluate it, run the baselines.

These tasks take the loaded base model as an argument, so none of them hashes its inputs (NO_CACHE) or
persists its result: a model is not something to fingerprint or pickle on every call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from ptune import artifacts, baseline, evaluate, pipeline, report, train
from ptune.catalog import get_task
from ptune.config import Params
from ptune.data import data_version, load_split
from ptune.errors import ModelError
from ptune.models import BaseModel, load_base_model
from ptune.registry import TrainingRun, training_params
from tasks.policies import retry_on, retry_unless

MODEL_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=retry_on(OSError, ModelError), **MODEL_TASK)
def load_model(spec: str) -> BaseModel:
    """The frozen base model (built-in name, local dir or hub id). Retried once: loading is file I/O."""
    return load_base_model(spec)


class TrainProgress:
    """`train_prompt` callback: a Prefect progress artifact (step/max_steps), plus the MLflow run's logging."""

    def __init__(self, task_name: str, max_steps: int, then: Callable[[train.StepInfo], None]) -> None:
        self.max_steps, self.then, self.shown = max_steps, then, -1.0
        self.logger = get_run_logger()
        self.artifact_id = create_progress_artifact(
            0.0, key=artifact_key("train-progress", task_name), description=f"Training `{task_name}`: step 0")

    def __call__(self, info: train.StepInfo) -> None:
        self.then(info)
        percent = min(100.0, 100.0 * info.step / self.max_steps)
        if info.metrics or percent - self.shown >= 5.0:  # one API call per 5 % (and per evaluation)
            self.shown = percent
            update_progress_artifact(self.artifact_id, percent, description=f"step {info.step}/{self.max_steps}, "
                                     f"loss {info.loss:.4f}" + (f", {info.metrics}" if info.metrics else ""))
        if info.metrics:
            self.logger.info("step %d: loss %.4f, %s", info.step, info.loss, info.metrics)

    def finish(self, steps: int) -> None:
        update_progress_artifact(self.artifact_id, 100.0, description=f"done: {steps} steps")


@dataclass
class Trained:
    """What a training produced: the prompt artifact on disk and the open MLflow run behind it."""

    task: str
    prompt_dir: Path
    run: TrainingRun
    best_step: int
    steps_run: int
    seconds: float
    resumed_from: int | None
    trainable: int  # trainable parameters: P * d
    metrics: dict[str, float] = field(default_factory=dict)  # best validation metrics


@task(retries=1, retry_delay_seconds=1, retry_condition_fn=retry_unless(), **MODEL_TASK)
def train_prompt(base: BaseModel, task_name: str, params: Params, out_dir: Path) -> Trained:
    """Train the soft prompt; checkpoints in out_dir/checkpoint, so a retry resumes instead of restarting."""
    spec, cfg = get_task(task_name, params), params.train
    run = TrainingRun(spec.name, training_params(spec.name, base.spec, base.fingerprint, cfg.to_dict(),
                                                 data_version(spec.name)))
    run.start()
    progress = TrainProgress(spec.name, cfg.max_steps, then=run)
    try:
        done = pipeline.train_task(spec.name, params, base=base, out_dir=out_dir, callback=progress)
    except BaseException:
        run.fail()
        raise
    progress.finish(done.result.steps_run)
    result = done.result
    return Trained(spec.name, done.prompt_dir, run, result.best_step, result.steps_run, result.seconds,
                   result.resumed_from, baseline.trainable_params(result.prompt.weight), dict(result.best_metrics))

def _max_examples(params: Params) -> int | None:
    return params.evaluate.max_examples or None


@task(**MODEL_TASK)
def evaluate_prompt(base: BaseModel, task_name: str, params: Params, prompt_dir: Path) -> evaluate.EvalResult:
    """The tuned prompt on the test split (checked against the base model's fingerprint first)."""
    prompt, _ = artifacts.load_prompt(prompt_dir, expected_fingerprint=base.fingerprint)
    return evaluate.evaluate(base, get_task(task_name, params), load_split(task_name, "test"), prompt,
                             batch_size=params.evaluate.batch_size, max_examples=_max_examples(params),
                             split="test", progress=False)


@task(**MODEL_TASK)
def run_baselines(base: BaseModel, task_name: str, params: Params) -> dict[str, evaluate.EvalResult]:
    """Hard-prompt baselines (zero-shot, k-shot, ...) on the same frozen model and test split."""
    return baseline.run_baselines(base, get_task(task_name, params), load_split(task_name, "train"),
                                  load_split(task_name, "test"), k=params.evaluate.k_shot, seed=params.data.seed,
                                  batch_size=params.evaluate.batch_size, max_examples=_max_examples(params),
                                  progress=False)


@task(**MODEL_TASK)
def write_report(trained: Trained, params: Params, tuned: evaluate.EvalResult,
                 baselines: dict[str, evaluate.EvalResult]) -> report.ReportPaths:
    """Tuned vs baselines as report.md, metrics.json, a chart and predictions.jsonl next to the prompt."""
    results = {**baselines, report.TUNED: tuned}
    trainable = {name: 0 for name in results} | {report.TUNED: trained.trainable}
    test = load_split(trained.task, "test")[:_max_examples(params)]
    return report.write_report(trained.task, results, trained.prompt_dir.parent / "report", trainable,
                               examples=test, notes=getattr(baselines, "notes", None))
