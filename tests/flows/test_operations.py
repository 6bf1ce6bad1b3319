"""Operating the flows (issue 14, and issue 13's Prefect items) against the Prefect test API on a toy project:
ptune's log lines and evaluation progress reach Prefect, a slow step times out and leaves a failure artifact,
the nightly keeps a champion trained on unchanged data, the data version is noted once, persisted results are
JSON, and a data step waits for a running `ptune repro`.
"""

from __future__ import annotations

import importlib
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml
from prefect import Task, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterName,
)
from prefect.serializers import JSONSerializer
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

from flows.common import task_run
from flows.nightly import nightly_flow
from flows.params import NightlyParams, TrainFlowParams
from flows.train import UNCHANGED, train_task_flow
from ptune.fileio import file_lock
from ptune.pipeline import stages
from ptune.pipeline.repro import lock_path
from ptune.registry import tracking
from tasks.data import fetch_task_data, prepare_split
from tasks.events import note_data_version
from tests.flows.api import artifacts, task_states


@pytest.fixture(scope="module")
def trained(toy_project):
    state = train_task_flow(TrainFlowParams(task="toy"), return_state=True)
    assert state.is_completed(), state.message
    return state


def _logs(flow_run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        found = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in subflows])))
    return [log.message for log in found]


def test_ptune_log_lines_and_eval_progress_reach_prefect(trained):
    lines = _logs(trained.state_details.flow_run_id)
    assert any("toy/test:" in line and "examples" in line for line in lines), lines[-20:]  # ptune.evaluation
    found = artifacts(trained.state_details.flow_run_id)
    for key in ("eval-progress-toy", "baselines-progress-toy"):
        assert found[key].type == "progress" and float(found[key].data) == 100.0


def test_every_task_persists_json_or_nothing(trained):
    modules = [importlib.import_module(f"tasks.{name}") for name in ("data", "training", "registry", "events")]
    tasks = [obj for mod in modules for obj in vars(mod).values() if isinstance(obj, Task)]
    assert len(tasks) >= 10
    for task in tasks:
        serializer = task.result_serializer
        assert task.persist_result is False or serializer == "json" or isinstance(serializer, JSONSerializer), task.name
    stored = [p for p in Path(PREFECT_LOCAL_STORAGE_PATH.value()).rglob("*") if p.is_file()]
    assert stored, "prepare/validate should have persisted their (cache) results"
    for path in stored:  # task records: JSON metadata naming the serializer; flow results: the JSON value itself
        record = json.loads(path.read_bytes())  # a pickle is not JSON
        if isinstance(record, dict) and "metadata" in record:
            assert record["metadata"]["serializer"]["type"] == "json", path


def _params_with(root: Path, name: str, **sections) -> str:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params.update(sections)
    (root / name).write_text(yaml.safe_dump(params))
    return name


def test_a_slow_step_times_out_and_leaves_a_failure_artifact(trained, toy_project, monkeypatch):
    fast = {"step_seconds": 0.001, "example_seconds": 0.001, "margin": 1, "min_seconds": 1}
    params_file = _params_with(toy_project, "params-slow.yaml", timeouts=fast)

    def slow_train(*args, **kwargs):  # the injected fault: a training step that never finishes
        for _ in range(600):
            time.sleep(0.1)

    monkeypatch.setattr(stages, "train", slow_train)
    start = time.monotonic()
    state = train_task_flow(TrainFlowParams(task="toy", params_file=params_file), return_state=True)
    assert state.is_failed() and time.monotonic() - start < 45  # 2 attempts of 1 s, not 60 s
    assert task_states(state.state_details.flow_run_id)["train_prompt"] == "TimedOut"
    report = artifacts(state.state_details.flow_run_id)["failure-train-task-toy"].data
    assert "train_prompt" in report and "TimedOut" in report and "**Last checkpoint**: none" in report


def test_nightly_keeps_the_champion_when_data_is_unchanged(trained, toy_project):
    versions = len(tracking.client().search_model_versions("name='ptune-toy'"))
    state = nightly_flow(NightlyParams(tasks=["toy"]), return_state=True)
    assert state.is_completed(), state.message
    (row,) = state.result()
    assert row["decision"] == UNCHANGED and row["version"] == "1"
    assert UNCHANGED in artifacts(state.state_details.flow_run_id)["ptune-nightly"].data
    assert len(tracking.client().search_model_versions("name='ptune-toy'")) == versions  # nothing trained

    data = toy_project / "data" / "toy.jsonl"
    data.write_text(data.read_text() + '{"text": "a brand new review good", "label": "good"}\n')
    before = data_step_runs()
    state = nightly_flow(NightlyParams(tasks=["toy"]), return_state=True)
    (row,) = state.result()
    assert row["decision"] != UNCHANGED and row["version"] == str(versions + 1)  # new data: trained
    after = data_step_runs()
    assert {step: after[step] - before[step] for step in after} == {"fetch_task_data": 1, "validate_split": 1}


def data_step_runs() -> dict[str, int]:
    """How many fetch and validate task runs the Prefect API holds (the nightly checks each task's data once)."""
    with get_client(sync_client=True) as client:
        return {step: len(client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=step))))
                for step in ("fetch_task_data", "validate_split")}


def test_data_version_is_noted_once(toy_project):
    from prefect import flow

    @flow
    def note_twice(name: str) -> list[bool]:
        run = task_run(TrainFlowParams(task=name), name)
        fetch_task_data(run)
        prepare_split(run)
        return [note_data_version(run, emit=False)["changed"] for _ in range(2)]

    assert note_twice("toy_bad") == [True, False]


def test_a_data_step_waits_for_a_running_repro(toy_project):
    (toy_project / ".dvc").mkdir(exist_ok=True)
    run = task_run(TrainFlowParams(task="toy"), "toy")
    held, released = threading.Event(), []

    def repro() -> None:  # `ptune repro` holding its workspace lock for a second
        with file_lock(lock_path(toy_project)):
            held.set()
            time.sleep(1.0)
            released.append(time.monotonic())

    thread = threading.Thread(target=repro)
    thread.start()
    held.wait(10)
    prepare_split.fn(run)
    done = time.monotonic()
    thread.join(10)
    shutil.rmtree(toy_project / ".dvc")
    assert released and done >= released[0]
