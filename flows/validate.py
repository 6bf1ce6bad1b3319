"""validate_flow: fetch, prepare and validate one task's data, without training anything."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import State

from flows.common import check_data, task_run
from flows.failure import HOOKS
from flows.params import ValidateParams
from tasks.data import validation_report
from tasks.training import artifact_key


def _run_name() -> str:
    form = flow_run.parameters.get("params")
    return f"validate-{getattr(form, 'task', None) or (form or {}).get('task', '?')}"


@flow(name="validate", flow_run_name=_run_name, result_serializer="json", **HOOKS)
def validate_flow(params: ValidateParams) -> dict[str, Any] | State:
    """Check one task's data before anyone trains on it.

    1. Read params.yaml (and the form's params file).
    2. Fetch, prepare and validate; a failure publishes the report and ends Failed. A prepared data version
       not seen before emits `ptune.data.changed` (the `train` deployment's trigger retrains that task).
    3. On success, publish the report too.
    """
    run = task_run(params, params.task)                                            # 1
    failed = check_data(run, refresh=params.refresh_data, emit=params.emit_events)  # 2
    if failed is not None:
        return failed
    create_markdown_artifact(validation_report(params.task), key=artifact_key("validation", params.task),  # 3
                             description=f"Validation of `{params.task}` passed")
    return {"task": params.task, "valid": True}
