"""sweep_flow against the Prefect test API on the toy task: trials as MLflow child runs, an artifact with
the best settings, sweeps/toy.yaml written; the test split is not read."""

from __future__ import annotations

import pytest
import yaml

from flows.params import SweepParams
from flows.sweep import sweep_flow
from ptune.config import project_params
from ptune.pipeline import stages
from ptune.studies import sweep_runs
from tests.flows.api import artifacts


@pytest.fixture(scope="module")
def swept(toy_project):
    run = stages.TaskRun.build("toy", project_params())
    stages.fetch(run)
    stages.prepare(run)
    test_file = toy_project / "data" / "prepared" / "toy" / "test.jsonl"
    test_file.write_text("not json: a sweep that reads the test split fails here\n")
    state = sweep_flow(SweepParams(task="toy", trials=2, budget_minutes=10), return_state=True)
    return state, toy_project


def test_sweep_flow_runs_trials_and_publishes_the_best(swept):
    state, root = swept
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 2
    assert len(sweep_runs.child_runs("toy", summary["mlflow_parent_run"])) == 2
    doc = yaml.safe_load((root / "sweeps" / "toy.yaml").read_text())
    assert doc["train"] == summary["best_train"] and summary["file"].endswith("sweeps/toy.yaml")
    artifact = artifacts(state.state_details.flow_run_id)["sweep-toy"]
    assert "Best validation/accuracy" in artifact.data and "task_overrides" in artifact.data
