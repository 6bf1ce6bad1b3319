"""Hub tasks offline: the form says which tasks need internet, and a flow run of one while HF_HUB_OFFLINE is set
ends Failed at once with a one-line reason and the remedy, before any task runs (Prefect test API)."""

from __future__ import annotations

import pytest
from prefect.utilities.callables import parameter_schema

from flows.params import TrainFlowParams
from flows.train import train_task_flow
from ptune.config import project_params
from ptune.data.catalog import builtin_tasks, get_task
from ptune.data.splits import offline_refusal
from tests.flows.api import task_states

HUB = sorted(name for name, spec in builtin_tasks().items() if not spec.source.offline)


def test_the_task_field_names_the_tasks_that_need_internet(toy_project):
    task = parameter_schema(train_task_flow).model_dump_for_openapi()["definitions"]["TrainFlowParams"]
    description = task["properties"]["task"]["description"]
    assert len(HUB) >= 12 and "NEEDS INTERNET" in description and "HF_HUB_OFFLINE" in description
    listed = description.split("NEEDS INTERNET", 1)[1]
    assert all(name in listed for name in HUB) and "rotten_tomatoes" not in listed and "toy" not in listed


def test_a_hub_task_is_refused_offline_before_any_work(toy_project, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    state = train_task_flow(TrainFlowParams(task="boolq"), return_state=True)
    assert state.is_failed() and "\n" not in state.message
    assert "needs internet" in state.message and "HF_HUB_OFFLINE" in state.message and "offline task" in state.message
    assert task_states(state.state_details.flow_run_id) == {}  # nothing fetched, nothing trained
    assert not (toy_project / "data" / "raw" / "boolq.jsonl").exists()


@pytest.mark.parametrize("task", ["rotten_tomatoes", "toy"])
def test_offline_tasks_and_online_machines_are_not_refused(toy_project, monkeypatch, task):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert offline_refusal(get_task(task, project_params())) is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert offline_refusal(get_task("boolq")) is None
