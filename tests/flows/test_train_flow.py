"""train_task_flow end to end on a tiny model and a toy user task, against the Prefect test API and a temp MLflow
store; then the failure paths: bad data stops at validation, and the nightly flow goes on past a failing task."""

from __future__ import annotations

import pytest
from prefect import get_client

from flows.nightly import nightly_flow
from flows.params import NightlyParams, PromoteParams, TrainFlowParams, TrainOverrides, ValidateParams
from flows.prefect_setup import GPU_LIMIT
from flows.promote import promote_flow
from flows.run_default import summary_table
from flows.train import train_task_flow
from flows.validate import validate_flow
from ptune.registry import tracking
from tests.flows.api import artifacts, task_states

MODEL_TASKS = {"load_model", "train_prompt", "evaluate_prompt", "run_baselines", "write_report", "register_prompt",
               "promote_if_better"}


@pytest.fixture(scope="module")
def toy_run(toy_project):
    return train_task_flow(TrainFlowParams(task="toy"), return_state=True)


def test_train_flow_completes_registers_and_decides_alias(toy_run, toy_project):
    assert toy_run.is_completed(), toy_run.message
    summary = toy_run.result()
    assert summary["steps"] == 6 and summary["version"] == "1" and summary["metric"] == "test/accuracy"
    low_high = summary["gain_ci"]  # tuned - best baseline (chosen on validation), paired 95% interval
    assert low_high[1] <= low_high[0] <= low_high[2] and summary["n"] > 0 and summary["champion_ci"] is None

    states = task_states(toy_run.state_details.flow_run_id)
    assert MODEL_TASKS | {"fetch_task_data", "prepare_split", "validate_split"} <= set(states)
    assert set(states.values()) == {"Completed"}

    mlc = tracking.client()
    version = mlc.get_model_version("ptune-toy", "1")
    assert version.tags["promotion_decision"] == "champion"  # promote.min_gain = -1 in the toy params
    assert version.tags["promotion_reason"]
    assert str(mlc.get_model_version_by_alias("ptune-toy", "champion").version) == "1"
    run = mlc.get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and "test/accuracy" in run.data.metrics
    assert "baseline/zero_shot/test/accuracy" in run.data.metrics
    flow_run_id = str(toy_run.state_details.flow_run_id)  # the MLflow run links back to the Prefect flow run
    assert run.info.run_name.startswith("train-toy") and run.data.tags["prefect.flow_run_id"] == flow_run_id
    assert run.data.tags["prefect.flow_run_url"].endswith(f"/flow-runs/flow-run/{flow_run_id}")
    assert [(d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs] == [("toy", run.data.params["data_version"])]
    assert tracking.client().get_model_version("ptune-toy", "1").tags["prompt_sha256"]


def test_train_flow_publishes_artifacts(toy_run):
    found = artifacts(toy_run.state_details.flow_run_id)
    progress, summary = found["train-progress-toy"], found["train-toy"]
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert summary.type == "markdown"
    for text in ("tuned prompt", "zero-shot", "k-shot", "champion", "#/experiments/", "models:/ptune-toy/1",
                 "majority class", "chosen on the validation split", "95% CI"):
        assert text in summary.data, text
    chart = found["chart-toy"]  # the report PNG, served by MLflow (same file as the run's report/ artifact)
    assert chart.type == "image" and "get-artifact?path=report/tuned_vs_baseline.png&run_uuid=" in chart.data
    assert chart.data in summary.data


def test_gpu_limit_exists_and_is_released(toy_run):
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
    assert limit.limit == 1 and limit.active_slots == 0


def test_bad_dataset_stops_at_validation(toy_project):
    state = train_task_flow(TrainFlowParams(task="toy_bad"), return_state=True)
    assert state.is_failed()
    assert "validation failed, nothing trained" in state.message
    assert "unknown label (allowed: good, bad)" in state.message
    assert "expect_column_values_to_be_in_set(target)" in state.message

    states = task_states(state.state_details.flow_run_id)
    assert states["validate_split"] == "Failed"
    assert not MODEL_TASKS & set(states), states  # nothing after validation ran

    report = artifacts(state.state_details.flow_run_id)["validation-toy-bad"]
    assert "FAILED" in report.data and "expect_column_values_to_be_in_set" in report.data
    assert tracking.client().search_model_versions("name='ptune-toy_bad'") == []


def test_data_stages_are_cached_when_nothing_changed(toy_run):
    validate_flow(ValidateParams(task="toy"))  # stores the prepare result under the current files' key
    state = validate_flow(ValidateParams(task="toy"), return_state=True)
    assert state.is_completed()
    states = task_states(state.state_details.flow_run_id)
    assert states["prepare_split"] == "Cached" and states["validate_split"] == "Cached"
    assert states["fetch_task_data"] == "Completed"  # fetch always runs: its source may have changed


def test_nightly_attempts_every_task_and_fails_if_one_failed(toy_run):
    params = NightlyParams(tasks=["toy_bad", "toy"], train=TrainOverrides(max_steps=2, eval_every=2),
                           retrain_unchanged=True)  # toy's champion saw this data: train it anyway
    state = nightly_flow(params, return_state=True)
    assert state.is_failed()
    assert state.message == "1 of 2 tasks failed: toy_bad"
    rows = state.result(raise_on_failure=False)  # all rows, for `make run`'s printed table
    assert [(r["task"], r["state"]) for r in rows] == [("toy_bad", "Failed"), ("toy", "Completed")]
    print(summary_table(rows))

    table = artifacts(state.state_details.flow_run_id)["ptune-nightly"].data
    assert "| toy_bad | Failed |" in table and "| toy | Completed |" in table
    assert "1 of 2 tasks completed" in table
    assert tracking.client().get_model_version("ptune-toy", "2").tags["promotion_decision"] in ("champion", "challenger")


def test_promote_flow_decides_the_latest_version(toy_run):
    decision = promote_flow(PromoteParams(task="toy"))
    latest = max(int(v.version) for v in tracking.client().search_model_versions("name='ptune-toy'"))
    assert decision["version"] == str(latest) and decision["alias"] in ("champion", "challenger")
    assert decision["reason"]
