"""Retry policies do what they say: an I/O error is retried and succeeds, bad data is not retried, and a
training run killed mid-way resumes from its checkpoint on the retry instead of starting over."""

from __future__ import annotations

import pytest

from ptune.config import load_params
from ptune.errors import DataError
from ptune.packages import PackageError
from ptune.pipeline import stages
from ptune.registry import tracking
from tasks import training
from tasks.data import fetch_task_data


@pytest.fixture
def run(toy_project, tmp_path):
    return stages.TaskRun.build("toy", load_params(toy_project / "params.yaml"), run_dir=tmp_path / "run")


def flaky(real, error: Exception, failures: int):
    """`real`, failing with `error` on the first `failures` calls; `.calls` counts every call."""

    def wrapper(*args, **kwargs):
        wrapper.calls += 1
        if wrapper.calls <= failures:
            raise error
        return real(*args, **kwargs)

    wrapper.calls = 0
    return wrapper


def test_fetch_retries_an_io_error_and_succeeds(monkeypatch, run):
    fake = flaky(stages.splits.fetch, OSError("connection reset by peer"), failures=1)
    monkeypatch.setattr(stages.splits, "fetch", fake)
    state = fetch_task_data(run, return_state=True)
    assert state.is_completed(), state.message
    assert fake.calls == 2 and state.result().endswith("toy.jsonl")


def test_fetch_does_not_retry_bad_data(monkeypatch, run):
    fake = flaky(stages.splits.fetch, DataError("toy.jsonl: no rows"), failures=5)
    monkeypatch.setattr(stages.splits, "fetch", fake)
    state = fetch_task_data(run, return_state=True)
    assert state.is_failed() and fake.calls == 1


@pytest.mark.parametrize(("kind", "calls"), [("unreachable", 2), ("truncated", 2), ("unlisted", 1), ("mismatch", 1)])
def test_fetch_retries_a_package_failure_only_when_a_retry_can_fix_it(monkeypatch, run, kind, calls):
    fake = flaky(stages.splits.fetch, PackageError(f"x.whl: {kind}", kind=kind), failures=1)
    monkeypatch.setattr(stages.splits, "fetch", fake)
    state = fetch_task_data(run, return_state=True)
    assert fake.calls == calls and state.is_completed() == (calls == 2)


def test_training_killed_midway_resumes_from_checkpoint(monkeypatch, run):
    stages.fetch(run)
    stages.prepare(run)
    base = training.load_model.fn(run)
    real_call = training.TrainProgress.__call__
    crashes = []

    def preempted_at_step_4(self, info):  # checkpoint_every=2: step 4 is on disk when this fires
        real_call(self, info)
        if info.step == 4 and not crashes:
            crashes.append(info.step)
            raise RuntimeError("simulated preemption at step 4")

    monkeypatch.setattr(training.TrainProgress, "__call__", preempted_at_step_4)
    state = training.train_prompt(run, base, return_state=True)
    assert state.is_completed(), state.message
    trained = state.result()
    assert crashes == [4]
    assert trained.resumed_from == 4 and trained.steps_run == 6  # 2 more steps, not 6 from scratch
    assert (trained.prompt_dir / "prompt.safetensors").exists()

    mlc = tracking.client()
    experiment = mlc.get_experiment_by_name("ptune/toy")
    statuses = sorted(r.info.status for r in mlc.search_runs([experiment.experiment_id]))
    assert statuses == ["FAILED", "RUNNING"]  # the killed attempt's run is marked failed; the retry's is open
    tracking.resume("toy", trained.run_id).fail()
