"""User tasks declared in YAML: the `tasks:` mapping of params.yaml, or a file it names (`tasks: {file: x.yaml}`).

An entry names a local JSONL/CSV/Parquet file, an input template with {field} placeholders, the target field,
and for classification the label words (+ optional label_map from raw values to words). Every problem in
every entry is collected and raised once as a ConfigError. See docs/user_tasks.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ptune.config import Params
from ptune.data.sources import LocalSource
from ptune.data.spec import METRICS, TaskSpec, TemplateFormatter, placeholders
from ptune.errors import ConfigError
from ptune.paths import project_dir

REQUIRED = ("path", "template", "target_field")
OPTIONAL = ("label_words", "label_map", "metric", "metrics", "k_shot", "max_source_tokens",
            "max_target_tokens", "description", "split_field", "stop_strings")
# fields that left a task entry: where each went (`tasks` is a dependency of dvc.yaml's train stage, so an
# evaluation setting kept here would retrain every task when it changes)
MOVED = {"instruction": "params.yaml `evaluate: {{instructions: {{{name}: ...}}}}` (the hand-written baselines' "
                        "instruction is an evaluation setting: changing it there reruns only evaluation)"}
SUFFIXES = (".jsonl", ".csv", ".parquet")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def user_tasks(params: Params | None = None, reserved: Mapping[str, Any] = {}) -> dict[str, TaskSpec]:  # noqa: B006
    """Parse and validate the user tasks of `params.tasks`; raise one ConfigError listing every problem.

    Relative paths (the tasks file, data files) are resolved against `params.base_dir`, the directory of the
    params file they came from (the project directory for params built in code)."""
    if params is None:
        return {}
    section, base = params.tasks, params.base_dir or project_dir()
    if isinstance(section, Mapping) and set(section) == {"file"}:
        path = (base / str(section["file"])).resolve()
        if not path.is_file():
            raise ConfigError(f"tasks: file {path} not found")
        section, base = yaml.safe_load(path.read_text(encoding="utf-8")) or {}, path.parent
    if not section:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"tasks: expected a mapping of task name -> entry, got {type(section).__name__}")
    problems: list[str] = []
    specs = {}
    for name, entry in section.items():
        found = _check_entry(str(name), entry, reserved)
        problems += found
        if not found:
            specs[str(name)] = _build_spec(str(name), entry, base)
    if problems:
        raise ConfigError("invalid user tasks:\n  - " + "\n  - ".join(problems))
    return specs


def _check_entry(name: str, entry: Any, reserved: Mapping[str, Any]) -> list[str]:
    """Every problem of one entry, each as 'task <name>: <field>=<value> (allowed ...)'."""
    where = f"task {name!r}"
    if not isinstance(entry, Mapping):
        return [f"{where}: expected a mapping, got {entry!r}"]
    problems = [f"{where}: missing required field {key!r}" for key in REQUIRED if key not in entry]
    problems += [f"{where}: {key!r} moved to " + MOVED[key].format(name=name) for key in entry if key in MOVED]
    problems += [f"{where}: unknown field {key!r} (allowed: {', '.join(REQUIRED + OPTIONAL)})"
                 for key in entry if key not in REQUIRED + OPTIONAL + tuple(MOVED)]
    if not NAME_RE.match(name):
        problems.append(f"{where}: name must match {NAME_RE.pattern}")
    if name in reserved:
        problems.append(f"{where}: name clashes with a built-in task")
    if "path" in entry and not str(entry["path"]).lower().endswith(SUFFIXES):
        problems.append(f"{where}: path={entry['path']!r} (allowed suffixes: {', '.join(SUFFIXES)})")
    problems += _check_template(where, entry.get("template"))
    problems += _check_labels(where, entry)
    problems += _check_numbers(where, entry)
    stops = entry.get("stop_strings", [])
    if not isinstance(stops, list) or not all(isinstance(x, str) and x for x in stops):
        problems.append(f"{where}: stop_strings={stops!r} (allowed: a list of non-empty strings, e.g. [\"\\n\"])")
    return problems


def _check_template(where: str, template: Any) -> list[str]:
    if template is None:
        return []
    if not isinstance(template, str):
        return [f"{where}: template={template!r} must be a string"]
    try:
        names = placeholders(template)
    except ValueError as exc:
        return [f"{where}: template={template!r} is not a valid {{field}} template: {exc}"]
    bad = [n for n in names if not n.isidentifier()]
    if bad or not names:
        return [f"{where}: template={template!r} needs {{field}} placeholders naming columns (bad: {bad})"]
    return []


def _check_labels(where: str, entry: Mapping[str, Any]) -> list[str]:
    words = entry.get("label_words") or []
    problems = []
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words) \
            or len(set(words)) != len(words):
        problems.append(f"{where}: label_words={words!r} must be a list of distinct non-empty strings")
        words = []
    label_map = entry.get("label_map") or {}
    if not isinstance(label_map, Mapping):
        problems.append(f"{where}: label_map={label_map!r} must map raw values to label words")
    elif label_map and not words:
        problems.append(f"{where}: label_map needs label_words")
    else:
        problems += [f"{where}: label_map[{raw!r}]={word!r} (allowed: {', '.join(words)})"
                     for raw, word in label_map.items() if word not in words]
    kind = "classification" if words else "generation"
    metrics = _metrics(entry)
    problems += [f"{where}: metric={m!r} (allowed for {kind}: {', '.join(METRICS[kind])})"
                 for m in metrics if m not in METRICS[kind]]
    return problems


def _check_numbers(where: str, entry: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, low in (("k_shot", 0), ("max_source_tokens", 1), ("max_target_tokens", 1)):
        value = entry.get(key, low)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            problems.append(f"{where}: {key}={value!r} (allowed: integer >= {low})")
    return problems


def _metrics(entry: Mapping[str, Any]) -> tuple[str, ...]:
    value = entry.get("metrics", entry.get("metric"))
    if value is None:
        return ("accuracy",) if entry.get("label_words") else ("rougeL",)
    return tuple(value) if isinstance(value, list) else (str(value),)


def _build_spec(name: str, entry: Mapping[str, Any], base: Path) -> TaskSpec:
    words = tuple(entry.get("label_words") or ())
    label_map = tuple((str(k), str(v)) for k, v in (entry.get("label_map") or {}).items())
    target = str(entry["target_field"])
    columns = tuple(dict.fromkeys([*(p for p in placeholders(entry["template"]) if p != target), target]))  # target last
    path = Path(str(entry["path"])).expanduser()
    source = LocalSource(path if path.is_absolute() else (base / path).resolve(), str(entry.get("split_field", "")))
    return TaskSpec(
        name, "classification" if words else "generation", source, columns,
        TemplateFormatter(entry["template"], target, label_map), words, _metrics(entry),
        k_shot=entry.get("k_shot", 4),
        max_source_tokens=entry.get("max_source_tokens", 256), max_target_tokens=entry.get("max_target_tokens", 16),
        description=str(entry.get("description", f"user task on {path.name}")),
        stop_strings=tuple(entry.get("stop_strings") or ()),
    )
