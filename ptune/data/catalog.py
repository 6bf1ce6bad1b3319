"""The task catalog: one `TaskSpec` per task, declared once; everything else is keyed by its name.

Built-ins: offline tasks on real data shipped in PyPI packages (`offline_tasks`), hub tasks (`hub_tasks`);
user tasks come from the `tasks:` section of the `Params` the caller passes (`user_tasks`). Nothing here
reads a file the caller did not name.
"""

from __future__ import annotations

import difflib

from ptune.config import Params
from ptune.data.hub_tasks import HUB_TASKS
from ptune.data.offline_tasks import OFFLINE_TASKS
from ptune.data.spec import TaskSpec
from ptune.data.user_tasks import user_tasks
from ptune.errors import ConfigError


def builtin_tasks() -> dict[str, TaskSpec]:
    """Offline and hub built-ins by name."""
    return {spec.name: spec for spec in (*OFFLINE_TASKS, *HUB_TASKS)}


def all_tasks(params: Params | None = None) -> dict[str, TaskSpec]:
    """Built-ins, then the user tasks declared in `params` (none when params is None)."""
    builtins = builtin_tasks()
    return {**builtins, **user_tasks(params, reserved=builtins)}


def list_tasks(params: Params | None = None) -> list[TaskSpec]:
    return list(all_tasks(params).values())


def get_task(name: str | TaskSpec, params: Params | None = None) -> TaskSpec:
    """The spec named `name`; an unknown name raises ConfigError listing close matches."""
    if isinstance(name, TaskSpec):
        return name
    builtins = builtin_tasks()
    if name in builtins:
        return builtins[name]
    tasks = all_tasks(params)
    if name in tasks:
        return tasks[name]
    close = difflib.get_close_matches(name, tasks, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"unknown task {name!r}: {hint}known tasks: {', '.join(sorted(tasks))}")
