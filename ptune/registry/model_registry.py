"""The MLflow model registry for ptune: one registered model `ptune-<task>` per task, aliases, downloads.

A version is a pyfunc logged from code (`ptune/registry/pyfunc_model.py`, no pickled class) whose one
artifact is the prompt directory. Every registry call of ptune goes through this module (promotion and
the Prefect tasks included), so MLflow failures all become one `RegistryError` naming the action.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ptune.data.spec import TaskSpec
from ptune.errors import ConfigError, RegistryError
from ptune.fileio import atomic_dir, check_replaceable
from ptune.model import artifacts
from ptune.registry.tracking import client, git_commit, guard, log_final_metrics, run_for_prompt, run_record

PYFUNC_MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")


def model_name(task: str) -> str:
    return f"ptune-{task}"


@dataclass(frozen=True)
class RegisteredPrompt:
    """What `register_prompt` created: the registered model, its version and the run behind it."""

    name: str
    version: str
    run_id: str
    model_uri: str


def register_prompt(task: str, prompt_dir: str | Path, run_id: str, primary_metric: str) -> RegisteredPrompt:
    """Log the pyfunc (from code; artifact = the prompt dir) in `run_id` and register a version of
    `ptune-<task>`, tagged with data version, git commit, base fingerprint, metric and baseline values."""
    _, meta = artifacts.load_prompt(prompt_dir)  # refuse to register a broken artifact
    hint = f"The prompt is kept at {prompt_dir}; retry with `ptune register {prompt_dir} --task {task}`."
    with guard(f"registration of {model_name(task)}", hint):
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(PYFUNC_MODEL_FILE), artifacts={"prompt": str(prompt_dir)},
                registered_model_name=model_name(task), pip_requirements=_pip_requirements())
        version = str(info.registered_model_version)
        params, metrics = run_record(run_id)
        tags = {"task": task, "data_version": meta.data_version, "base_model": meta.base_spec,
                "base_fingerprint": meta.base_fingerprint, "git_commit": params.get("git_commit", git_commit()),
                "primary_metric": primary_metric, "run_id": run_id,
                **{k: repr(v) for k, v in metrics.items() if _is_result(k)}}
        set_version_tags(task, version, tags)
    return RegisteredPrompt(model_name(task), version, run_id, f"models:/{model_name(task)}/{version}")


def register_dir(prompt_dir: str | Path, spec: TaskSpec) -> RegisteredPrompt:
    """Register a prompt left on disk (e.g. when the tracking server was down): a new run is made from
    prompt.json (params, metrics), the prompt dir logged as its artifact, and a version registered."""
    _, meta = artifacts.load_prompt(prompt_dir)
    if spec.name != meta.task:
        raise RegistryError(f"{prompt_dir} holds a prompt for task {meta.task!r}, not {spec.name!r}")
    run = run_for_prompt(meta, registered_from=str(prompt_dir))
    metrics = {k: v for k, v in meta.metrics.items() if not k.startswith("baseline/")}
    baselines = {k: v for k, v in meta.metrics.items() if k.startswith("baseline/")}
    log_final_metrics(run.start(), baselines)
    run.finish(prompt_dir, metrics)
    return register_prompt(meta.task, prompt_dir, run.run_id, primary_metric=f"test/{spec.metrics[0]}")


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
    """Copy the prompt directory of `ptune-<task>@alias` (or `/version`) to `out` and check it (checksum,
    shape, finiteness) with ptune.model.artifacts.load_prompt. Returns `out`."""
    ref = f"{model_name(task)}/{version}" if version is not None else f"{model_name(task)}@{alias}"
    target = Path(out)
    check_replaceable(target, (artifacts.META_FILE, artifacts.TENSOR_FILE), "prompt artifact")
    with tempfile.TemporaryDirectory() as tmp:
        client()
        with guard(f"download of models:/{ref}"):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{ref}", dst_path=tmp))
        source = _prompt_path(local)
        if source is None or not source.is_dir():
            raise RegistryError(f"models:/{ref} holds no prompt artifact (expected artifacts/prompt)")
        artifacts.load_prompt(source)  # checked before it replaces anything
        with atomic_dir(target) as staged:
            shutil.copytree(source, staged, dirs_exist_ok=True)
    return target


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


def _pip_requirements() -> list[str]:
    """Requirements recorded with the model. ptune itself is not on PyPI: it is expected installed in
    the serving environment (`pip install -e .`), hence `--env-manager local` (see docs/mlflow.md)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "torch", "transformers", "safetensors", "pandas")]




def _is_result(metric: str) -> bool:
    """Final results become version tags; training curves and timings (train/*, */seconds) stay on the run."""
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
