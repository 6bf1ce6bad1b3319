"""nightly_flow: every task of params.yaml `run_tasks`, one after another, all attempted, all reported."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from flows.common import nightly_markdown, train_form
from flows.params import NightlyParams
from flows.train import train_task_flow
from ptune.config import project_params


@flow(name="nightly")
def nightly_flow(params: NightlyParams = NightlyParams()) -> list[dict[str, Any]] | State:  # noqa: B008
    """Run train_task_flow for each task; a failing task is recorded and the next one still runs.

    1. Take the task list: the form's subset, else params.yaml `run_tasks`.
    2. For each task in order, run train_task_flow as a subflow. Training holds the GPU slot
       (concurrency limit `ptune-gpu`, limit 1), so tasks never share the GPU, even across flow runs.
    3. Publish one summary artifact; end Failed when any task failed (after all were attempted).
    """
    names = list(params.tasks or project_params(params.params_file).run_tasks)    # 1
    rows = [run_one(params, name) for name in names]                                # 2
    create_markdown_artifact(nightly_markdown(rows), key="ptune-nightly",          # 3
                             description=f"ptune nightly: {len(names)} tasks")
    failed = [r["task"] for r in rows if r["state"] != "Completed"]
    if failed:
        return Failed(message=f"{len(failed)} of {len(rows)} tasks failed: {', '.join(failed)}", data=rows)
    return rows


def run_one(params: NightlyParams, name: str) -> dict[str, Any]:
    """One task as a subflow; its outcome as a summary row, never an exception."""
    try:
        form = train_form(params, name)
    except ValueError as exc:  # e.g. a task name the form rejects
        return {"task": name, "state": "Failed", "message": str(exc)}
    start = time.perf_counter()
    state = train_task_flow(form, return_state=True)
    seconds = time.perf_counter() - start  # the whole task: data checks, training, evaluation, registry
    if not state.is_completed():
        get_run_logger().error("task %s ended %s: %s", name, state.name, state.message)
        return {"task": name, "state": state.name, "message": state.message or "", "seconds": seconds}
    return {"state": "Completed", **state.result(), "seconds": seconds}
