"""The Prefect train task with `nproc` 2: two gloo ranks train, rank 0's steps reach the task's progress
callback in this process, in order, and the one MLflow run belongs to this process (it outlives the ranks
and is closed later by `register`). The form carries `nproc` as a launch setting: 1 unless asked."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from flows.params import TrainFlowParams
from ptune.config import load_params
from ptune.pipeline import stages
from ptune.registry import run_status, tracking
from tasks import training


def test_the_train_task_trains_on_two_ranks_and_reports_here(toy_project, tmp_path, monkeypatch):
    run = stages.TaskRun.build("toy", load_params(toy_project / "params.yaml"), run_dir=tmp_path / "run")
    stages.fetch(run)
    stages.prepare(run)
    steps, real_call = [], training.TrainProgress.__call__

    def record(self, info):
        steps.append(info.step)
        real_call(self, info)

    monkeypatch.setattr(training.TrainProgress, "__call__", record)
    state = training.train_prompt(run, training.load_model.fn(run), nproc=2, return_state=True)
    assert state.is_completed(), state.message
    trained = state.result()
    max_steps = run.params.train.max_steps
    assert steps == list(range(1, max_steps + 1)) and trained.steps_run == max_steps
    assert (trained.prompt_dir / "prompt.safetensors").exists()

    mlc = tracking.client()
    mlflow_run = mlc.get_run(trained.run_id)
    assert mlflow_run.info.status == "RUNNING"  # left open for register, as in one process
    assert mlflow_run.data.tags[run_status.PID_TAG] == str(os.getpid())
    assert len(mlc.get_metric_history(trained.run_id, "train/loss")) == max_steps
    tracking.resume("toy", trained.run_id).fail()


def test_the_form_launches_one_process_unless_asked():
    assert TrainFlowParams(task="toy").nproc == 1 and TrainFlowParams(task="toy", nproc=4).nproc == 4
    with pytest.raises(ValidationError):
        TrainFlowParams(task="toy", nproc=0)
    assert training.form_nproc() == 1  # outside a flow run
