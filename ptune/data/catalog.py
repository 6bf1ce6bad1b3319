"""The task catalog: one `TaskSpec` per task, declared once; everything else is keyed by its name.

Built-ins: offline tasks on real data shipped in PyPI packages (`offline_tasks`), hub tasks (`hub_tasks`);
user tasks come from the `tasks:` section of the `Params` the caller passes (`user_tasks`). Nothing here
reads a file the caller did not name.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping

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
    """The spec named `name`, with the baseline instruction `params.evaluate.instructions` gives it, if any;
    an unknown name (here or in `evaluate.instructions`) raises ConfigError listing close matches."""
    if isinstance(name, TaskSpec):
        return name
    builtins = builtin_tasks()
    tasks = builtins if name in builtins and not _instructions(params) else all_tasks(params)
    if name not in tasks:
        raise ConfigError(f"unknown task {name!r}: {_hint(name, tasks)}known tasks: {', '.join(sorted(tasks))}")
    return with_instruction(tasks[name], params, tasks)


def with_instruction(spec: TaskSpec, params: Params | None, known: Iterable[str]) -> TaskSpec:
    """`spec` with its instruction from params.yaml `evaluate.instructions` (itself when none is set there).
    The hand-written baselines read it; training never does, so changing it reruns only `dvc repro`'s evaluate."""
    instructions = _instructions(params)
    known = set(known)
    unknown = [f"evaluate.instructions.{task}: unknown task ({_hint(task, known)}known tasks: "
               f"{', '.join(sorted(known))})" for task in instructions if task not in known]
    if unknown:
        raise ConfigError("; ".join(unknown))
    text = instructions.get(spec.name)
    return spec if text is None else dataclasses.replace(spec, instruction=text)


def _instructions(params: Params | None) -> Mapping[str, str]:
    return params.evaluate.instructions if params is not None else {}


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f"did you mean {', '.join(close)}? " if close else ""
