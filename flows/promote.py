"""promote_flow: re-decide the @champion alias for one registered version of `ptune-<task>`."""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import task_run, timed
from flows.failure import HOOKS
from flows.params import PromoteParams
from flows.prefect_setup import gpu_slot
from tasks.registry import latest_version, promote_if_better
from tasks.training import artifact_key, load_model


@flow(name="promote", result_serializer="json", **HOOKS)
def promote_flow(params: PromoteParams) -> dict[str, Any]:
    """Apply the promotion rule to one version (e.g. after changing promote.min_gain or the test split).

    1. Read params.yaml; pick the version (the form's, else the latest).
    2. Take the GPU slot and load the base model (the champion is re-evaluated on the current test split).
    3. Decide and write: reason tags, then the alias move, holding the task's promotion limit (one promotion
       of a task at a time on every worker: tasks/registry.py).
    4. Publish the decision.
    """
    run = task_run(params, params.task)                                            # 1
    version = str(params.version or latest_version(run))
    with gpu_slot():
        base = timed(load_model, run, "load")(run)                                  # 2
        decision = timed(promote_if_better, run, "promote")(run, version, base)    # 3
    create_markdown_artifact(f"# `ptune-{params.task}` v{version}: {decision.alias}\n\n{decision.reason}",  # 4
                             key=artifact_key("promote", params.task), description="promotion decision")
    return dataclasses.asdict(decision)
