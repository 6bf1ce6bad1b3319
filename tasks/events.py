"""Data-version events: Prefect hears when a task's prepared data changed, so a deployment trigger can retrain it.

The last data version Prefect saw for a task is a Prefect variable `ptune-data-<task>` (shown in the UI under
*Variables*). `note_data_version` compares the prepared data's version with it, stores the new one, and, when
asked to, emits the event

    ptune.data.changed   resource {prefect.resource.id: ptune.task.<task>, ptune.task: <task>}
                         payload  {task, old_version, new_version}

The `train` deployment's trigger (prefect.yaml) turns each such event into one `train-task` run for that task.
Flows that train the data themselves (train-task, nightly) record the version without emitting, so a
training never triggers a second one; `validate` emits (it is how new data is noticed between nightlies).
"""

from __future__ import annotations

import re

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.variables import Variable

from ptune.pipeline import stages

EVENT = "ptune.data.changed"


def variable_name(task_name: str) -> str:
    """Prefect variable names allow lowercase letters, digits, dashes and underscores."""
    return "ptune-data-" + re.sub(r"[^a-z0-9_-]+", "-", task_name.lower())


def resource(task_name: str) -> dict[str, str]:
    return {"prefect.resource.id": f"ptune.task.{task_name}", "prefect.resource.name": task_name,
            "ptune.task": task_name}


@task(cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=2)
def note_data_version(run: stages.TaskRun, emit: bool) -> dict[str, str | bool | None]:
    """Record the prepared data's version; emit `ptune.data.changed` if it differs from the last one seen
    (a task seen for the first time counts as changed: it has no model trained on this data yet)."""
    name, new = run.name, run.data_version
    old = Variable.get(variable_name(name), default=None)
    changed = old != new
    if changed:
        Variable.set(variable_name(name), new, overwrite=True, tags=["ptune", "data-version"])
    if changed and emit:
        emit_event(EVENT, resource=resource(name), payload={"task": name, "old_version": old, "new_version": new})
        get_run_logger().info("data of %s changed (%s -> %s): emitted %s", name, old, new, EVENT)
    return {"task": name, "old_version": old, "new_version": new, "changed": changed}
