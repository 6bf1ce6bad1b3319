"""The state hooks of every flow (`HOOKS`), above all what a failed or crashed flow run leaves for the person on
call: a markdown artifact `failure-<flow>-<task>`.

`on_failure` and `on_crashed` call `failure_artifact`: it names the task, the step (the failed, crashed or
timed-out task runs), the error, and the last training checkpoint of the run, with its step, so a rerun's
resume point is known. The notification itself is the automation of flows/prefect_setup.py. `on_running`
attaches ptune's logs to the run again (`tasks.logs.attach_ptune_logs`): a long-lived worker's logging may
have been reconfigured since the flow module was imported.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import fsspec
from prefect import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from safetensors import safe_open

from ptune.config import project_params
from ptune.errors import PtuneError
from ptune.paths import redacted, runs_dir
from ptune.training.store import MANIFEST, location
from tasks.logs import attach_ptune_logs
from tasks.training import artifact_key

log = logging.getLogger(__name__)
BAD = {"FAILED", "CRASHED"}


def _form_task(flow_run: Any) -> str | None:
    form = (flow_run.parameters or {}).get("params")
    return form.get("task") if isinstance(form, dict) else getattr(form, "task", None)


def checkpoint_uri() -> str | None:
    """The project's `train.checkpoint_uri` (None: the default local checkpoint, or params.yaml unreadable)."""
    try:
        return project_params().train.checkpoint_uri
    except PtuneError:
        return None


def last_checkpoint(task_name: str | None, flow_run_id: Any) -> str:
    """'<path> (step N)' of the run's checkpoint, or a sentence saying there is none."""
    if not task_name:
        return "none (not a single-task run)"
    root = runs_dir() / task_name / "prefect" / str(flow_run_id)[:8]
    uri = checkpoint_uri()
    if uri:  # train.checkpoint_uri: the manifest names the last committed step (ptune.training.store)
        where = f"{location(uri, task_name, root).rstrip('/')}/{MANIFEST}"
        try:
            with fsspec.open(where, "rb") as fh:
                step = json.loads(fh.read()).get("step", "?")
        except (OSError, ValueError) as exc:
            return f"none at {redacted(where)} ({type(exc).__name__})"
        return f"`{redacted(where)}` (step {step}); a retry of this flow run resumes there, on any worker"
    path = root / "checkpoint" / "state.safetensors"
    if not path.is_file():
        return f"none (no {path})"
    with safe_open(str(path), framework="np") as fh:
        step = json.loads((fh.metadata() or {}).get("state", "{}")).get("step", "?")
    return f"`{path}` (step {step}); a retry of this flow run resumes there"


def failed_steps(client: Any, flow_run_id: Any) -> list[str]:
    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [f"`{r.name}`: {r.state.name} - {(r.state.message or '')[:500]}" for r in runs
            if r.state is not None and (r.state.type.value in BAD or r.state.name == "TimedOut")]


def failure_markdown(flow_name: str, task_name: str | None, state: Any, steps: list[str], checkpoint: str) -> str:
    return "\n".join([f"# `{flow_name}` {state.name}" + (f": `{task_name}`" if task_name else ""), "",
                      f"**Error**: {(state.message or '')[:3000]}", "",
                      "**Step(s)**:", *([f"- {s}" for s in steps] or ["- (no task run failed: the flow itself)"]),
                      "", f"**Last checkpoint**: {checkpoint}"])


def failure_artifact(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure / on_crashed hook. Never raises: a hook's error would hide the run's own."""
    try:
        task_name = _form_task(flow_run)
        with get_client(sync_client=True) as client:
            steps = failed_steps(client, flow_run.id)
            text = failure_markdown(flow.name, task_name, state, steps, last_checkpoint(task_name, flow_run.id))
            client.create_artifact(ArtifactCreate(
                key=artifact_key("failure", flow.name, task_name or ""), type="markdown", data=text,
                flow_run_id=flow_run.id, description=f"{flow.name} {state.name}"))
    except Exception:  # noqa: BLE001 - report, do not mask the failure being reported
        log.exception("could not write the failure artifact of flow run %s", getattr(flow_run, "id", "?"))


def ptune_logs(flow: Any, flow_run: Any, state: Any) -> None:
    """on_running hook: ptune's log lines reach this run's logs, whatever reconfigured logging since import."""
    attach_ptune_logs()


HOOKS: dict[str, list] = {"on_running": [ptune_logs], "on_failure": [failure_artifact], "on_crashed": [failure_artifact]}
