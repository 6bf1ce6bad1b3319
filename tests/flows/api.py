"""Read what a flow run left in the Prefect API: its task runs and artifacts (as the UI shows them)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)


def task_runs(flow_run_id: UUID) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def artifacts(flow_run_id: UUID) -> dict[str, Any]:
    """Artifacts of the flow run (its task runs' included), by key."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found if a.key}


def task_states(flow_run_id: UUID) -> dict[str, str]:
    """Task name (without the run suffix) -> state name, for the task runs of one flow run."""
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in task_runs(flow_run_id)}
