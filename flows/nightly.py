"""nightly_flow: every task of params.yaml `run_tasks`, one after another, all attempted, all reported."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_client, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.deployments import run_deployment
from prefect.states import Failed, State

from flows.common import nightly_markdown, train_form
from flows.failure import HOOKS
from flows.params import NightlyParams
from flows.train import train_task_flow
from ptune.config import project_params


@flow(name="nightly", result_serializer="json", **HOOKS)
def nightly_flow(params: NightlyParams = NightlyParams()) -> list[dict[str, Any]] | State:  # noqa: B008
    """Run train_task_flow for each task whose data changed; a failing task is recorded and the next one still runs.

    1. Take the task list: the form's subset, else params.yaml `run_tasks`.
    2. For each task in order: check its data; if the champion was trained on this very data version, keep it
       ("data unchanged, champion kept") unless `retrain_unchanged`; else train it. Both happen in one
       train_task_flow subflow (its `keep_unchanged_champion`), so each task's data is checked once.
       Training holds the GPU slot (concurrency limit `ptune-gpu`), so tasks never share a GPU slot.
       With `fan_out`, each task is its own `train-task/train` deployment run instead (any worker takes it).
    3. Publish one summary artifact; end Failed when any task failed (after all were attempted).
    """
    names = list(params.tasks or project_params(params.params_file).run_tasks)    # 1
    rows = fan_out(params, names) if params.fan_out else [run_one(params, name) for name in names]  # 2
    create_markdown_artifact(nightly_markdown(rows), key="ptune-nightly",          # 3
                             description=f"ptune nightly: {len(names)} tasks")
    failed = [r["task"] for r in rows if r["state"] != "Completed"]
    if failed:
        return Failed(message=f"{len(failed)} of {len(rows)} tasks failed: {', '.join(failed)}", data=rows)
    return rows


def run_one(params: NightlyParams, name: str) -> dict[str, Any]:
    """One task as a subflow (or kept as it is); its outcome as a summary row, never an exception."""
    try:
        form = train_form(params, name)
    except ValueError as exc:  # e.g. a task name the form rejects
        return {"task": name, "state": "Failed", "message": str(exc)}
    start = time.perf_counter()
    state = train_task_flow(form, return_state=True)  # checks the data once, and may keep the champion
    seconds = time.perf_counter() - start  # the whole task: data checks, training, evaluation, registry
    if not state.is_completed():
        get_run_logger().error("task %s ended %s: %s", name, state.name, state.message)
        return {"task": name, "state": state.name, "message": state.message or "", "seconds": seconds}
    return {"state": "Completed", **state.result(), "seconds": seconds}


def fan_out(params: NightlyParams, names: list[str]) -> list[dict[str, Any]]:
    """Every task needing training as a `train-task/train` run, all submitted at once so that the pool's
    workers share them (the `ptune-gpu` limit still lets one training per slot); then wait for each."""
    rows: dict[str, dict[str, Any]] = {}
    runs = {}
    for name in names:
        try:
            form = train_form(params, name)
        except ValueError as exc:  # e.g. a task name the form rejects: recorded as the task's row
            rows[name] = {"task": name, "state": "Failed", "message": str(exc)}
            continue
        runs[name] = run_deployment(TRAIN_DEPLOYMENT, parameters={"params": form.model_dump(mode="json")},
                                    timeout=0, flow_run_name=f"train-{name}")
    for name, run in runs.items():
        rows[name] = _finished_row(name, run.id)
    return [rows[name] for name in names]


TRAIN_DEPLOYMENT = "train-task/train"


def _finished_row(name: str, run_id: Any, poll: float = 2.0) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        while not (run := client.read_flow_run(run_id)).state.is_final():
            time.sleep(poll)
    seconds = run.total_run_time.total_seconds()
    if not run.state.is_completed():
        return {"task": name, "state": run.state.name, "message": run.state.message or "", "seconds": seconds}
    return {"state": "Completed", **run.state.result(), "seconds": seconds}
