"""The MLflow model registry for ptune: one registered model `ptune-<task>` per task, aliases, downloads.

A version is a pyfunc logged from code (`ptune/registry/pyfunc_model.py`, no pickled class) whose one
artifact is the prompt directory. Every registry call of ptune goes through this module (promotion and
the Prefect tasks included), so MLflow failures all become one `RegistryError` naming the action.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ptune.data.catalog import get_task
from ptune.data.spec import TaskSpec
from ptune.errors import ConfigError, RegistryError
from ptune.fileio import atomic_dir, check_replaceable
from ptune.model import artifacts
from ptune.model.ensemble_artifact import load_ensemble
from ptune.registry import model_card, pyfunc_logging, stored_spec
from ptune.registry.integrity import CODE_TAG, PROMPT_TAG, check, code_sha256, prompt_sha256
from ptune.registry.pyfunc_logging import PTUNE_PACKAGE, PYFUNC_MODEL_FILE
from ptune.registry.tracking import (
    client,
    find_run,
    git_commit,
    guard,
    log_final_metrics,
    log_model_metrics,
    run_for_prompt,
    run_record,
)


def model_name(task: str) -> str:
    return f"ptune-{task}"


@dataclass(frozen=True)
class RegisteredPrompt:
    """What `register_prompt` created: the registered model, its version and the run behind it."""

    name: str
    version: str
    run_id: str
    model_uri: str
    note: str = ""  # what `register_dir` recorded with it (which report's metrics, or what a retry added)


def register_prompt(task: str, prompt_dir: str | Path, run_id: str, primary_metric: str, *,
                    spec: TaskSpec | None = None, example: Mapping[str, str] | None = None) -> RegisteredPrompt:
    """Log the pyfunc (from code; artifact = the prompt dir; signature, input example, frozen code) in
    `run_id`, link the run's final metrics to it as LoggedModel metrics, and register a version of
    `ptune-<task>` with its tags (data version, commit, fingerprint, hashes, the headline results) set in the
    same call. The artifact is the prompt dir plus the resolved `spec` as task_spec.json, its sha256 a tag
    (`ptune.registry.stored_spec`). Idempotent per run: a retry after a partial failure returns the version
    already made from `run_id` instead of creating a second one."""
    _, meta = artifacts.load_prompt(prompt_dir)  # refuse to register a broken artifact
    hint = f"The prompt is kept at {prompt_dir}; retry with `ptune register {prompt_dir} --task {task}`."
    with guard(f"registration of {model_name(task)}", hint):
        found = version_of_run(task, run_id)
        if found is not None:
            return RegisteredPrompt(model_name(task), found, run_id, f"models:/{model_name(task)}/{found}")
        params, metrics = run_record(run_id)
        results = {k: v for k, v in metrics.items() if _is_result(k)}
        hashes = {PROMPT_TAG: prompt_sha256(prompt_dir), CODE_TAG: code_sha256(PYFUNC_MODEL_FILE, PTUNE_PACKAGE)}
        spec = spec or get_task(task)
        with tempfile.TemporaryDirectory() as tmp:  # the logged artifact: the prompt dir + task_spec.json
            staged, hashes[stored_spec.SPEC_TAG] = stored_spec.stage_prompt(prompt_dir, spec, Path(tmp))
            model_id = pyfunc_logging.log_pyfunc(run_id, staged, spec, example, hashes)
        linked = {m.key for m in client().get_logged_model(model_id).metrics or []}  # log_model links step-0 ones
        log_model_metrics(run_id, model_id, {k: v for k, v in results.items() if k not in linked})
        tags = {"task": task, "data_version": meta.data_version, "base_model": meta.base_spec,
                "base_fingerprint": meta.base_fingerprint, "git_commit": params.get("git_commit", git_commit()),
                "primary_metric": primary_metric, "run_id": run_id, **hashes,
                **{k: repr(v) for k, v in headline_results(results, primary_metric).items()}}
        version = _create_version(task, run_id, model_id, tags)
    return RegisteredPrompt(model_name(task), version, run_id, f"models:/{model_name(task)}/{version}")


def _create_version(task: str, run_id: str, model_id: str, tags: Mapping[str, str]) -> str:
    """A new version of `ptune-<task>` (created when missing) for a LoggedModel, with its tags in the same call."""
    mlc = client()
    try:
        mlc.create_registered_model(model_name(task))
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    version = str(mlc.create_model_version(model_name(task), f"models:/{model_id}", run_id=run_id, tags=dict(tags),
                                           model_id=model_id).version)
    # the link the UI follows from the logged model to its versions (as mlflow.register_model writes it)
    mlc.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps([{"name": model_name(task),
                                                                              "version": version}])})
    return version


def version_of_run(task: str, run_id: str) -> str | None:
    """The version of `ptune-<task>` already registered from `run_id` (the lowest), or None."""
    found = client().search_model_versions(f"name='{model_name(task)}' and run_id='{run_id}'")
    return str(min(int(v.version) for v in found)) if found else None


def register_dir(prompt_dir: str | Path, spec: TaskSpec, report: Mapping[str, float] | None = None,
                 example: Mapping[str, str] | None = None, note: str = "", run_id: str | None = None) -> RegisteredPrompt:
    """Register a prompt left on disk: in `run_id`, the run that trained it (`ptune.registry.run_link`), else in a
    new run made from prompt.json (params, metrics). The run gets `report` (the test and baseline metrics of
    the report that scored it, if any) and the prompt dir as its artifact, and a version is registered. The same
    prompt registered again (a retry) reuses its run, and so its version, adding the results that version lacks."""
    _, meta = artifacts.load_prompt(prompt_dir)
    if spec.name != meta.task:
        raise RegistryError(f"{prompt_dir} holds a prompt for task {meta.task!r}, not {spec.name!r}")
    recorded = {**meta.metrics, **(report or {})}
    digest = prompt_sha256(prompt_dir)
    run = run_for_prompt(meta, registered_from=str(prompt_dir), prompt_sha256=digest)
    run.run_id = run_id or find_run(meta.task, {"prompt_sha256": digest})
    done = version_of_run(meta.task, run.run_id) if run.run_id else None
    if done is not None:  # registered before (a retry): the same version, only what it lacks is added
        added = _add_missing_results(meta.task, done, run.run_id, recorded)
        said = f"; added {len(added)} metrics it lacked: {', '.join(added)}" if added else "; nothing new to add"
        return RegisteredPrompt(model_name(meta.task), done, run.run_id, f"models:/{model_name(meta.task)}/{done}",
                                f"already registered{said}")
    metrics = {k: v for k, v in recorded.items() if not k.startswith("baseline/")}
    baselines = {k: v for k, v in recorded.items() if k.startswith("baseline/")}
    log_final_metrics(run.start(), baselines)
    run.finish(prompt_dir, metrics)
    registered = register_prompt(meta.task, prompt_dir, run.run_id, primary_metric=f"test/{spec.metrics[0]}",
                                 spec=spec, example=example)
    model_card.publish_after_registration(meta.task, registered.version, run.run_id, prompt_dir, report=recorded)
    return dataclasses.replace(registered, note=note)


def _add_missing_results(task: str, version: str, run_id: str, recorded: Mapping[str, float]) -> list[str]:
    """The results in `recorded` that a version has neither as a tag nor as a LoggedModel metric, added to it
    (run and LoggedModel metrics, version tags); their names."""
    have = {**version_tags(task, version), **version_metrics(task, version)}
    missing = {k: float(v) for k, v in recorded.items() if _is_result(k) and k not in have}
    if missing:
        with guard(f"lookup of {model_name(task)} version {version}"):
            model_id = logged_model_id(client().get_model_version(model_name(task), version))
        if model_id:
            log_model_metrics(run_id, model_id, missing)
        else:
            log_final_metrics(run_id, missing)
        shown = headline_results(missing, have.get("primary_metric", "test/accuracy")) if model_id else missing
        set_version_tags(task, version, {k: repr(v) for k, v in shown.items()})
    return sorted(missing)


def headline_results(results: Mapping[str, float], metric: str) -> dict[str, float]:
    """The results a version shows as tags; all of them are its LoggedModel metrics (what promotion reads).
    The primary `metric`, the split's n and degenerate flag, the best baseline, the gain and its interval; a
    record without "baseline/best/<metric>" (an older report) keeps each baseline's `metric` instead."""
    split = metric.split("/", 1)[0]
    keys = {metric, f"{split}/n", f"{split}/degenerate", f"baseline/best/{metric}", f"gain/{metric}",
            f"gain/{metric}/ci_low", f"gain/{metric}/ci_high"}
    if f"baseline/best/{metric}" not in results:
        keys |= {k for k in results if k.startswith("baseline/") and k.endswith("/" + metric)
                 and k.count("/") == metric.count("/") + 2}
    return {k: v for k, v in results.items() if k in keys}


def version_metrics(task: str, version: str) -> dict[str, float]:
    """The LoggedModel metrics of one version ({} for a version registered before they were logged)."""
    with guard(f"metrics lookup of {model_name(task)} version {version}"):
        model_id = logged_model_id(client().get_model_version(model_name(task), str(version)))
        if not model_id:
            return {}
        return {m.key: float(m.value) for m in client().get_logged_model(model_id).metrics or []}


def logged_model_id(found: ModelVersion) -> str | None:
    """The LoggedModel behind a version: its model_id, or the id in its `models:/<model_id>` source (the SQL
    registry store keeps only the source)."""
    source = str(found.source or "")
    tail = source.removeprefix("models:/")
    return found.model_id or (tail if source.startswith("models:/m-") and "/" not in tail else None)


def version_tags(task: str, version: str) -> dict[str, str]:
    """Tags of one version of `ptune-<task>`."""
    with guard(f"lookup of {model_name(task)} version {version}"):
        return dict(client().get_model_version(model_name(task), str(version)).tags)


def alias_version(task: str, alias: str) -> ModelVersion | None:
    """The version that `alias` points to, or None when the alias (or the model) does not exist."""
    mlc = client()
    try:
        return mlc.get_model_version_by_alias(model_name(task), alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        with guard(f"alias lookup {model_name(task)}@{alias}"):
            raise


def download_prompt(task: str, out: str | Path, alias: str | None = "champion", version: str | None = None) -> Path:
    """Copy the prompt directory of `ptune-<task>@alias` (or `/version`) to `out` and check it: the prompt and
    pyfunc code hashes recorded as version tags at registration (an artifact changed in the store is
    refused with ArtifactError), then checksum, shape, finiteness (ptune.model.artifacts.load_prompt)."""
    ref = f"{model_name(task)}/{version}" if version is not None else f"{model_name(task)}@{alias}"
    target = Path(out)
    check_replaceable(target, artifacts.PROMPT_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        mlc = client()
        with guard(f"download of models:/{ref}"):
            found = (mlc.get_model_version(model_name(task), str(version)) if version is not None
                     else mlc.get_model_version_by_alias(model_name(task), str(alias)))
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{ref}", dst_path=tmp))
        source = _prompt_path(local)
        if source is None or not source.is_dir():
            raise RegistryError(f"models:/{ref} holds no prompt artifact (expected artifacts/prompt)")
        verify_model_dir(local, source, dict(found.tags), f"models:/{ref} (version {found.version})")
        load_ensemble(source)  # an ensemble (K prompts + ensemble.json): every member checked too
        with atomic_dir(target, artifacts.PROMPT_DIR) as staged:
            shutil.copytree(source, staged, dirs_exist_ok=True)
    return target


def verify_model_dir(model_dir: Path, prompt_dir: Path, recorded: Mapping[str, str], where: str) -> None:
    """Refuse a downloaded model whose prompt is damaged (checksum in prompt.json), or whose prompt, code or
    task spec hash differs from the one `recorded` at registration (both files edited together in the store)."""
    artifacts.load_prompt(prompt_dir)
    code = model_dir / "code" / PTUNE_PACKAGE.name
    check("the prompt artifact", where, recorded.get(PROMPT_TAG), prompt_sha256(prompt_dir))
    check("the pyfunc code", where, recorded.get(CODE_TAG),
          code_sha256(model_dir / PYFUNC_MODEL_FILE.name, code if code.is_dir() else None))
    stored_spec.check_spec_file(prompt_dir, recorded, where)


def load_registered_prompt(task: str, alias: str = "champion") -> tuple[torch.Tensor, artifacts.PromptMeta]:
    """The prompt (P, d) and its PromptMeta behind `ptune-<task>@alias`, checked, without loading a base
    model (for that, `ptune.registry.loading.load_prompt_with_base("models:/ptune-<task>@<alias>")`)."""
    with tempfile.TemporaryDirectory() as tmp:
        return artifacts.load_prompt(download_prompt(task, Path(tmp) / "prompt", alias=alias))


def _prompt_path(model_dir: Path) -> Path | None:
    """Where the "prompt" artifact of a downloaded pyfunc model lies (MLflow keeps the source dir's name)."""
    flavor = mlflow.models.Model.load(str(model_dir)).flavors.get("python_function", {})
    relative = (flavor.get("artifacts") or {}).get("prompt", {}).get("path")
    return model_dir / relative if relative else None


def _is_result(metric: str) -> bool:
    """Final results become LoggedModel metrics (the headline ones version tags too); training curves and
    timings (train/*, */seconds) stay on the run."""
    return not metric.startswith("train/") and not metric.endswith("/seconds")


def set_version_tags(task: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on one version of `ptune-<task>`."""
    name, mlc = model_name(task), client()
    with guard(f"tagging of {name} version {version}"):
        for key, value in tags.items():
            mlc.set_model_version_tag(name, str(version), key, str(value))


def set_alias(task: str, alias: str, version: str) -> None:
    """Point `ptune-<task>@alias` at `version` (the last write of a promotion)."""
    with guard(f"alias move {model_name(task)}@{alias} -> {version}"):
        client().set_registered_model_alias(model_name(task), alias, str(version))


def latest_version(task: str) -> str:
    """The highest version number of `ptune-<task>` (ConfigError when none is registered)."""
    name = model_name(task)
    with guard(f"version lookup of {name}"):
        versions = [int(v.version) for v in client().search_model_versions(f"name='{name}'")]
    if not versions:
        raise ConfigError(f"{name} has no registered version yet: run train_task_flow first")
    return str(max(versions))
