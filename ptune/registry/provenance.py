"""Which registry version a loaded pyfunc is, and the check of its files against that version's record.

MLflow hands `load_context` a local directory, not the URI it was loaded from, and everything in that
directory (MLmodel included, so its `model_config` hashes) comes from the artifact store: it cannot vouch for
itself. The reference is the registry database: the MLmodel's `run_id` and `model_id` (MLflow 3 LoggedModel)
find the `ptune-*` versions registered from that logged model (`run_id` filter, then the version's model id),
and the prompt and code hashes, and the base model to load, are read from those versions' tags.
An edited MLmodel can at most claim another logged model: its files must then hash to what the registry
recorded for that one, so a prompt that was never registered is never served. A model with no registry
version is refused unless `PTUNE_ALLOW_UNREGISTERED=1` (then the configured base model is used).
None of this stops the code MLflow runs from the store before `load_context` (docs/mlflow.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion

from ptune.errors import ArtifactError
from ptune.registry.integrity import CODE_TAG, PROMPT_TAG
from ptune.registry.loading import BASE_TAG, configured_base
from ptune.registry.model_registry import logged_model_id, verify_model_dir
from ptune.registry.pyfunc_logging import LOGGING_BASE
from ptune.registry.tracking import client, guard, tracking_uri

ALLOW_ENV = "PTUNE_ALLOW_UNREGISTERED"
_ID = re.compile(r"^[\w-]+$")  # ids go into a search filter: nothing that could change its meaning


def checked_base(model_dir: Path, prompt_dir: Path) -> str:
    """Check the pyfunc at `model_dir` (its prompt at `prompt_dir`) against its registry versions and return
    the base model spec to load, read from the registry. ArtifactError: no registry record (unless
    `PTUNE_ALLOW_UNREGISTERED=1`), hashes missing from the record, or files that differ from it."""
    logging_base = LOGGING_BASE.get()
    if logging_base is not None:  # ptune is logging this very model (MLflow's input-example check)
        return logging_base
    versions = registered_versions(model_dir)
    if not versions:
        if os.environ.get(ALLOW_ENV) == "1":
            return configured_base()
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
    return versions[0].tags.get(BASE_TAG) or configured_base()


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
