"""The task spec a version was registered with, stored with it: `task_spec.json` beside prompt.json.

A registered version computes what it computed when it was registered, wherever it is loaded: the pyfunc,
`ptune pull` and `ptune serve` rebuild its `TaskSpec` from this file and never from a local params.yaml.
The file lies in the artifact store, so it is trusted only once its sha256 equals the version tag
`task_spec_sha256` (the registry database), as the prompt and code hashes are (`integrity`).

A formatter is data or code. A template (user tasks, `TemplateFormatter`) is stored whole: template, target
field, label map. A Python function (built-in tasks) cannot be: the file names the built-in task it belongs
to, shows its input template, and holds the sha256 of its outputs on fixed probe rows; on load the catalog's
function is used only if it still gives those outputs. Every other field (label words, metrics, instruction,
k-shot, token limits, stop strings) is stored and used as registered. No MLflow here: files and hashes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ptune.data.catalog import builtin_tasks
from ptune.data.sources import LocalSource
from ptune.data.spec import TaskSpec, TemplateFormatter, input_template, target_stand_ins
from ptune.errors import ArtifactError, RegistryError
from ptune.fileio import atomic_write_text, sha256_of
from ptune.model.artifacts import TASK_SPEC_FILE
from ptune.registry.integrity import check

SPEC_TAG = "task_spec_sha256"  # version tag: sha256 of the version's task_spec.json
FORMAT = 1
DATA_FIELDS = ("name", "kind", "columns", "label_words", "metrics", "instruction", "k_shot", "max_source_tokens",
               "max_target_tokens", "description", "stop_strings")
TUPLE_FIELDS = ("columns", "label_words", "metrics", "stop_strings")
log = logging.getLogger(__name__)


def spec_record(spec: TaskSpec) -> dict[str, Any]:
    """The spec as JSON: its data fields, where its data came from, and its formatter (see the module doc)."""
    record: dict[str, Any] = {"format": FORMAT, **{f: getattr(spec, f) for f in DATA_FIELDS}}
    record.update({f: list(record[f]) for f in TUPLE_FIELDS})
    source = spec.source
    record["source"] = {"describe": source.describe() if source is not None else ""}
    if isinstance(source, LocalSource):
        record["source"].update(path=str(source.path), split_field=source.split_field)
    record["formatter"] = formatter_record(spec)
    return record


def formatter_record(spec: TaskSpec) -> dict[str, Any]:
    """A template in full; a built-in's function by its task name, input template and probe hash.
    RegistryError for any other function: it could not be rebuilt where the version is loaded."""
    fmt = spec.formatter
    if isinstance(fmt, TemplateFormatter):
        return {"kind": "template", "template": fmt.template, "target_field": fmt.target_field,
                "label_map": [list(pair) for pair in fmt.label_map]}
    builtins = builtin_tasks()
    owners = [name for name, s in builtins.items() if s.formatter is fmt]
    if not owners:
        raise RegistryError(
            f"task {spec.name!r}: its formatter {getattr(fmt, '__qualname__', fmt)!r} is neither a template nor a "
            f"built-in task's function, so a registered version could not rebuild it; declare the task in "
            f"params.yaml `tasks:` (a template) to register it")
    owner = spec.name if spec.name in owners else owners[0]
    return {"kind": "builtin", "task": owner, "function": f"{fmt.__module__}.{fmt.__qualname__}",
            "input_template": input_template(spec), "probe_sha256": probe_sha256(spec)}


def probe_sha256(spec: TaskSpec) -> str:
    """sha256 of the formatter's outputs (or exception types) on fixed rows built from the spec's columns
    and label words: the same function gives the same hash; one that formats, strips or maps differently
    does not."""
    target = spec.columns[-1]
    texts = ({c: f"  Probe {c}: one, TWO.  " for c in spec.columns},
             {c: f"second? {{{c}}} 3" for c in spec.columns})
    outputs = []
    for row in texts:
        for stand_in in (*target_stand_ins(spec), "1", "false", "-1"):
            try:
                outputs.append(list(spec.formatter({**row, target: stand_in})))
            except Exception as exc:  # noqa: BLE001 - task code: which rows it refuses is behaviour too
                outputs.append(["!", type(exc).__name__])
    return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()


def stage_prompt(prompt_dir: str | Path, spec: TaskSpec, into: Path) -> tuple[Path, str]:
    """A copy of `prompt_dir` under `into` (same name) with the spec written beside prompt.json; (the copy,
    the sha256 of its task_spec.json). The spec is rebuilt from the file first, so a spec that a loaded
    version could not rebuild is refused here, at registration."""
    source = Path(prompt_dir)
    staged = into / source.name
    shutil.copytree(source, staged, ignore=shutil.ignore_patterns(TASK_SPEC_FILE))
    record = spec_record(spec)
    spec_from_record(record, f"the spec of {source}")
    atomic_write_text(staged / TASK_SPEC_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return staged, sha256_of(staged / TASK_SPEC_FILE)


def spec_from_record(record: Mapping[str, Any], where: str) -> TaskSpec:
    """The TaskSpec of a stored record. ArtifactError when it cannot be rebuilt: an unknown format, a built-in
    task no longer in the catalog, or a built-in formatter whose probe outputs differ from the stored ones."""
    if record.get("format") != FORMAT:
        raise ArtifactError(f"refusing the task spec at {where}: format {record.get('format')!r} (this ptune "
                            f"reads format {FORMAT}); load the version with the ptune it was registered with")
    fields = {f: tuple(record[f]) if f in TUPLE_FIELDS else record[f] for f in DATA_FIELDS}
    fmt = record["formatter"]
    if fmt["kind"] == "template":
        formatter = TemplateFormatter(fmt["template"], fmt["target_field"], tuple(map(tuple, fmt["label_map"])))
        src = record["source"]
        source = LocalSource(Path(src["path"]), src.get("split_field", "")) if "path" in src else None
        return TaskSpec(**fields, source=source, formatter=formatter)
    builtin = builtin_tasks().get(fmt["task"])
    if builtin is None:
        raise ArtifactError(f"refusing the task spec at {where}: it uses the formatter of built-in task "
                            f"{fmt['task']!r}, which this ptune does not have")
    spec = dataclasses.replace(builtin, **fields)
    if probe_sha256(spec) != fmt["probe_sha256"]:
        raise ArtifactError(
            f"refusing the task spec at {where}: built-in task {fmt['task']!r}'s formatter ({fmt['function']}) "
            f"now formats inputs differently than when the version was registered (input template then: "
            f"{fmt['input_template']!r}, now: {input_template(spec)!r}); serve it with the ptune it was "
            f"registered with (the MLflow pyfunc ships it) or re-register the prompt")
    return spec


def read_spec(prompt_dir: str | Path, where: str) -> TaskSpec:
    """The spec in `prompt_dir`'s task_spec.json, unchecked: only for files ptune is writing itself."""
    path = Path(prompt_dir) / TASK_SPEC_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"refusing the task spec at {where}: cannot read {path.name}: {exc}") from None
    return spec_from_record(record, where)


def check_spec_file(prompt_dir: str | Path, recorded: Mapping[str, str], where: str) -> None:
    """ArtifactError when the registry recorded a spec hash and task_spec.json is missing or differs from it
    (no tag: a version registered before specs were stored, nothing to check)."""
    expected = recorded.get(SPEC_TAG)
    path = Path(prompt_dir) / TASK_SPEC_FILE
    if expected and not path.is_file():
        raise ArtifactError(f"refusing the task spec at {where}: the registry recorded {SPEC_TAG}={expected}, "
                            f"but the artifact has no {TASK_SPEC_FILE}; restore the stored files or re-register "
                            f"the prompt")
    if expected:
        check("the task spec", where, expected, sha256_of(path))


def recorded_spec(prompt_dir: str | Path, recorded: Mapping[str, str], where: str) -> TaskSpec | None:
    """The spec a version was registered with, from its task_spec.json checked against the `recorded` tags
    (the registry's); None for a version registered before specs were stored (no tag)."""
    if not recorded.get(SPEC_TAG):
        return None
    check_spec_file(prompt_dir, recorded, where)
    return read_spec(prompt_dir, where)


def registered_spec(prompt_dir: str | Path, recorded: Mapping[str, str], where: str,
                    fallback: Callable[[], TaskSpec]) -> TaskSpec:
    """`recorded_spec`, or for a version registered before specs were stored `fallback()` (the catalog /
    params.yaml, as before) with a warning."""
    spec = recorded_spec(prompt_dir, recorded, where)
    if spec is None:
        log.warning("%s has no %s tag (registered before task specs were stored with versions): its task spec "
                    "comes from this ptune's catalog and params.yaml, which may differ from the one it was "
                    "registered with; re-register the prompt to store it", where, SPEC_TAG)
        return fallback()
    return spec
