"""Load a prompt together with the base model it was trained on, from a directory or a registry URI.

The one place that does "load the prompt, load the one base model allowed, check the fingerprint": the
pyfunc, the CLI (`eval`, `report`, `predict`, `pull --verify-base`), promotion and the stages all call it.
Which base model is allowed is never read from prompt.json (the artifact store): it is the caller's
`--base`, the registry's `base_model` tag, or params.yaml `model`; prompt.json must agree before any load.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ptune.config import project_params
from ptune.data.spec import TaskSpec
from ptune.errors import ArtifactError, RegistryError
from ptune.model import artifacts
from ptune.model.artifacts import PromptMeta
from ptune.model.base import BaseModel, load_base_model
from ptune.model.layout import warn_if_layout_differs
from ptune.registry import model_registry, stored_spec

BASE_TAG = "base_model"  # the version tag naming the base model it was registered with
MODEL_URI = re.compile(r"^models:/ptune-(?P<task>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class LoadedPrompt:
    prompt: torch.Tensor  # (P, d) fp32 on CPU
    meta: PromptMeta
    base: BaseModel  # the frozen base model the prompt was trained on (fingerprint checked)
    spec: TaskSpec | None = None  # a registry version's stored task spec (hash checked); None: a directory,
    # or a version registered before specs were stored


def load_prompt_with_base(source: str | Path, *, base: BaseModel | None = None,
                          base_spec: str | None = None) -> LoadedPrompt:
    """`source` is a prompt directory or `models:/ptune-<task>@<alias>` / `models:/ptune-<task>/<version>`.

    `base` is reused when its fingerprint is the prompt's. Otherwise the one base model allowed is loaded:
    `base_spec` (the user's `--base`), else for a registry URI the version's `base_model` tag, else the
    configured one (params.yaml `model`). prompt.json must name that model, checked before anything is
    loaded (a prompt never chooses which model gets loaded); a fingerprint that differs is refused too.
    For a registry URI, `.spec` is the task spec stored with the version (checked against its tag)."""
    match = MODEL_URI.match(str(source))
    if match is None and str(source).startswith("models:/"):
        raise RegistryError(f"{source}: expected models:/ptune-<task>@<alias> or models:/ptune-<task>/<version>")
    if match is None:
        return _load(Path(source), base, base_spec or configured_base())
    version, tags = _registry_record(match["task"], match["alias"], match["version"])
    with tempfile.TemporaryDirectory() as tmp:
        prompt_dir = model_registry.download_prompt(match["task"], Path(tmp) / "prompt",
                                                    alias=match["alias"], version=version)
        spec = stored_spec.recorded_spec(prompt_dir, tags, f"{source} (version {version})")
        loaded = _load(prompt_dir, base, base_spec or tags.get(BASE_TAG) or configured_base())
        return dataclasses.replace(loaded, spec=spec)


def pull_prompt(task: str, out: str | Path, *, alias: str = "champion", verify_base: bool = False,
                base_spec: str | None = None) -> Path:
    """`ptune pull`: the prompt directory of `ptune-<task>@alias` written to `out` (checked against the
    registry's hashes); with `verify_base` or `base_spec`, also loaded with its base model: `base_spec`, else
    the version's `base_model` tag, else the configured one (see `load_prompt_with_base`)."""
    version, tags = _registry_record(task, alias, None)
    target = model_registry.download_prompt(task, out, alias=alias, version=version)
    if verify_base or base_spec:
        _load(target, None, base_spec or tags.get(BASE_TAG) or configured_base())
    return target


def configured_base() -> str:
    """The project's base model (params.yaml `model`)."""
    return project_params().model


def _registry_record(task: str, alias: str | None, version: str | None) -> tuple[str | None, dict[str, str]]:
    """(version, its tags) for `@alias` or `/version`; (None, {}) for an alias that does not exist (the
    download then fails naming it). The tags come from the registry database, never the artifact store."""
    if version is not None:
        return version, model_registry.version_tags(task, version)
    found = model_registry.alias_version(task, str(alias))
    return (str(found.version), dict(found.tags)) if found is not None else (None, {})


def same_spec(named: str, allowed: str) -> bool:
    """Whether prompt.json's base spec names the allowed model: the same string, or the same local directory."""
    if named == allowed:
        return True
    first, second = Path(named).expanduser(), Path(allowed).expanduser()
    return first.is_dir() and second.is_dir() and first.resolve() == second.resolve()


def _load(prompt_dir: Path, base: BaseModel | None, allowed: str) -> LoadedPrompt:
    _, meta = artifacts.load_prompt(prompt_dir)  # checksum, shape, dtype, finiteness
    if base is None or base.fingerprint != meta.base_fingerprint:
        if not same_spec(meta.base_spec, allowed):
            raise ArtifactError(
                f"refusing to load the {meta.task!r} prompt at {prompt_dir}: its prompt.json names the base model "
                f"{meta.base_spec!r}, but the base model allowed here is {allowed!r} (--base, else the registry's "
                f"base_model tag, else params.yaml `model`); nothing was loaded. Name the base with --base to use it")
        base = load_base_model(allowed)
    if base.fingerprint != meta.base_fingerprint:
        raise ArtifactError(
            f"refusing to load the {meta.task!r} prompt at {prompt_dir}: base model mismatch: it was trained on "
            f"{meta.base_spec!r} with fingerprint {meta.base_fingerprint}, but {base.spec!r} now loads with "
            f"fingerprint {base.fingerprint} (a different model; retrain the prompt or restore that base model)")
    prompt, meta = artifacts.load_prompt(prompt_dir, expected_fingerprint=base.fingerprint)
    if prompt.shape[1] != base.hidden_size:
        raise ArtifactError(
            f"refusing to load the {meta.task!r} prompt at {prompt_dir}: its hidden size is {prompt.shape[1]} but "
            f"the base model {meta.base_spec!r} has hidden size {base.hidden_size} (shape {tuple(prompt.shape)}; "
            f"expected (n_tokens, {base.hidden_size}))")
    warn_if_layout_differs(meta, base, prompt_dir)
    return LoadedPrompt(prompt, meta, base)
