"""Which registry version a loaded pyfunc is, and the check of its files against that version's record.

MLflow hands `load_context` a local directory, not the URI it was loaded from, and everything in that
directory (MLmodel included, so its `model_config` hashes) comes from the artifact store: it cannot vouch for
itself. The reference is the registry database: the MLmodel's `run_id` and `model_id` (MLflow 3 LoggedModel)
find the `ptune-*` versions registered from that logged model (`run_id` filter, then the version's model id),
and the prompt, code and task spec hashes, and the base model to load, are read from those versions' tags;
the task spec predicted with is the one stored with the version (`ptune.registry.stored_spec`).
An edited MLmodel can at most claim another logged model: its files must then hash to what the registry
recorded for that one, so a prompt that was never registered is never served. A model with no registry
version is refused unless `PTUNE_ALLOW_UNREGISTERED=1` (then the configured base model is used).
None of this stops the code MLflow runs from the store before `load_context` (docs/mlflow.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion

from ptune.config import project_params
from ptune.data.catalog import get_task
from ptune.data.spec import TaskSpec
from ptune.errors import ArtifactError
from ptune.registry import stored_spec
from ptune.registry.integrity import CODE_TAG, PROMPT_TAG
from ptune.registry.loading import BASE_TAG, configured_base
from ptune.registry.model_registry import logged_model_id, verify_model_dir
from ptune.registry.pyfunc_logging import LOGGING_BASE
from ptune.registry.tracking import client, guard, tracking_uri

ALLOW_ENV = "PTUNE_ALLOW_UNREGISTERED"
_ID = re.compile(r"^[\w-]+$")  # ids go into a search filter: nothing that could change its meaning


@dataclass(frozen=True)
class CheckedModel:
    """What the registry says about a pyfunc's files, once they were checked against it."""

    base: str  # the base model spec to load (the version's `base_model` tag)
    tags: Mapping[str, str] | None  # the version's tags; None: ptune is logging it, or it is unregistered
    where: str  # "models:/ptune-<task>/<v>", or the model directory
    logging: bool = False  # ptune is logging this very model (MLflow's input-example check)


def checked_base(model_dir: Path, prompt_dir: Path) -> str:
    """The base model spec to load for the pyfunc at `model_dir`, read from the registry (`checked_model`)."""
    return checked_model(model_dir, prompt_dir).base


def checked_model(model_dir: Path, prompt_dir: Path) -> CheckedModel:
    """Check the pyfunc at `model_dir` (its prompt at `prompt_dir`) against its registry versions and return
    their record. ArtifactError: no registry record (unless `PTUNE_ALLOW_UNREGISTERED=1`), hashes missing
    from the record, or files (prompt, code, task spec) that differ from it."""
    logging_base = LOGGING_BASE.get()
    if logging_base is not None:  # ptune is logging this very model (MLflow's input-example check)
        return CheckedModel(logging_base, None, str(model_dir), logging=True)
    versions = registered_versions(model_dir)
    if not versions:
        if os.environ.get(ALLOW_ENV) == "1":
            return CheckedModel(configured_base(), None, str(model_dir))
        raise ArtifactError(
            f"refusing the model at {model_dir}: no ptune-<task> version in the registry ({tracking_uri()}) was "
            f"registered from it, so its prompt cannot be checked against a record; load a registered version "
            f"(models:/ptune-<task>@<alias>), or set {ALLOW_ENV}=1 to load it with params.yaml's base model")
    for found in versions:
        where = f"models:/{found.name}/{found.version}"
        missing = [tag for tag in (PROMPT_TAG, CODE_TAG) if not found.tags.get(tag)]
        if missing:
            raise ArtifactError(f"refusing the model at {model_dir}: the registry has no {' or '.join(missing)} tag "
                                f"for {where}, so its files cannot be checked; re-register the prompt")
        verify_model_dir(model_dir, prompt_dir, dict(found.tags), where)
    first = versions[0]
    return CheckedModel(first.tags.get(BASE_TAG) or configured_base(), dict(first.tags),
                        f"models:/{first.name}/{first.version}")


def checked_spec(checked: CheckedModel, prompt_dir: Path, task: str) -> TaskSpec:
    """The task spec to predict with: the one stored with the version (task_spec.json, its hash checked
    against the registry's tag), never the local params.yaml; the one being logged while ptune logs it; the
    catalog's / params.yaml's for an unregistered model (`PTUNE_ALLOW_UNREGISTERED=1`) or, with a warning,
    a version registered before specs were stored."""
    if checked.logging:
        return stored_spec.read_spec(prompt_dir, checked.where)
    if checked.tags is None:
        return get_task(task, project_params())
    return stored_spec.registered_spec(prompt_dir, checked.tags, checked.where,
                                       lambda: get_task(task, project_params()))


def registered_versions(model_dir: Path) -> list[ModelVersion]:
    """The `ptune-*` versions registered from the logged model that `model_dir`'s MLmodel names, lowest first."""
    meta = mlflow.models.Model.load(str(model_dir))
    run_id, model_id = str(meta.run_id or ""), str(meta.model_id or "")
    if not (_ID.match(run_id) and _ID.match(model_id)):
        return []
    with guard(f"registry lookup of the model at {model_dir}"):
        found = client().search_model_versions(f"run_id='{run_id}'")
    mine = [v for v in found if str(v.name).startswith("ptune-") and logged_model_id(v) == model_id]
    return sorted(mine, key=lambda v: (v.name, int(v.version)))
