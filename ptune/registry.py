"""MLflow tracking and model registry for ptune: one run per training, one registered model per task.

Tracking URI: `$MLFLOW_TRACKING_URI`, default `sqlite:///<project>/mlruns.db` with artifacts in
`<project>/mlartifacts` (`$PTUNE_MLFLOW_ARTIFACTS` overrides). Experiment `ptune/<task>`, registered
model `ptune-<task>`, a pyfunc logged from code (`ptune/pyfunc_model.py`) whose one artifact is the
prompt directory. mlflow is imported here and in pyfunc_model.py only; promotion.py goes through this.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ptune import artifacts
from ptune.errors import ArtifactError, RegistryError
from ptune.paths import project_dir

if TYPE_CHECKING:
    import torch

    from ptune.train import StepInfo

PYFUNC_MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")
_ENV_DEFAULTS = {  # telemetry off; HTTP retries bounded (~1+2+4 s back-off, 30 s timeout each)
    "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def experiment_name(task: str) -> str:
    return f"ptune/{task}"


def model_name(task: str) -> str:
    return f"ptune-{task}"


def tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, or the project's SQLite store `sqlite:///<project>/mlruns.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_dir() / 'mlruns.db'}"


def artifact_root() -> Path | None:
    """Local artifact root for new experiments; None when a tracking server decides (http URIs)."""
    if os.environ.get("PTUNE_MLFLOW_ARTIFACTS"):
        return Path(os.environ["PTUNE_MLFLOW_ARTIFACTS"]).resolve()
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"
    return None


def client() -> MlflowClient:
    """A client on the current tracking URI (telemetry off, bounded retries, env set once here)."""
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def guard(action: str, hint: str = "") -> Iterator[None]:
    """Turn MLflow/network failures into one RegistryError naming the action, the URI and a hint."""
    try:
        yield
    except RegistryError as exc:
        if hint and hint not in str(exc):
            raise RegistryError(f"{exc}\n{hint}") from exc
        raise
    except ArtifactError:
        raise
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else type(exc).__name__
        raise RegistryError(f"MLflow {action} failed (tracking URI {tracking_uri()}): {first}"
                            + (f"\n{hint}" if hint else "")) from exc


def ensure_experiment(task: str) -> str:
    """Id of experiment `ptune/<task>`, created (with the local artifact root) when missing."""
    mlc = client()
    with guard(f"experiment lookup for {task!r}"):
        found = mlc.get_experiment_by_name(experiment_name(task))
        if found is not None:
            return found.experiment_id
        root = artifact_root()
        location = (root / task).as_uri() if root is not None else None
        return mlc.create_experiment(experiment_name(task), artifact_location=location)


def git_commit() -> str:
    """HEAD of the project repository (+"-dirty" with uncommitted changes), or "unknown"."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=project_dir(), capture_output=True, text=True,  # noqa: E731
                                        timeout=10, check=True).stdout.strip()
        return run("rev-parse", "HEAD") + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def training_params(task: str, base_spec: str, base_fingerprint: str, train_config: Mapping[str, Any],
                    data_version: str) -> dict[str, Any]:
    """The params every training run logs: the train config plus task, base model, data and code identity."""
    params = dict(train_config)
    params.update(task=task, base_model=base_spec, base_fingerprint=base_fingerprint,
                  data_version=data_version, git_commit=git_commit())
    return params


class TrainingRun:
    """One MLflow run for one training; also the `callback(StepInfo)` handed to `train_prompt`.

    Steps are buffered and sent in batches (`flush_every`). Training never waits on MLflow: if the
    tracking server cannot be reached during training the run is marked offline and the buffered
    steps are sent by `finish`, which raises RegistryError when MLflow is still unreachable (the
    prompt stays on disk; `ptune register DIR --task T` registers it later)."""

    def __init__(self, task: str, params: Mapping[str, Any], flush_every: int = 20) -> None:
        self.task, self.params, self.flush_every = task, dict(params), flush_every
        self.run_id: str | None = None
        self._pending: list[Metric] = []
        self._offline = False

    def start(self) -> str:
        """Create the run (in `ptune/<task>`) and log its params; returns the run id."""
        if self.run_id is None:
            mlc, experiment_id = client(), ensure_experiment(self.task)
            with guard(f"run creation for {self.task!r}"):
                run = mlc.create_run(experiment_id, tags={"ptune.task": self.task})
                self.run_id = run.info.run_id
                mlc.log_batch(self.run_id, params=[_param(k, v) for k, v in sorted(self.params.items())])
        return self.run_id

    def __call__(self, info: StepInfo) -> None:
        """Record one training step: train/loss, train/lr and any validation metrics, at `info.step`."""
        values = {"train/loss": info.loss, "train/lr": info.lr, **(info.metrics or {})}
        stamp = _now_ms()
        self._pending += [Metric(k, float(v), stamp, int(info.step)) for k, v in values.items() if v is not None]
        if len(self._pending) >= self.flush_every and not self._offline:
            try:
                self.flush()
            except RegistryError:
                self._offline = True  # keep training; finish() retries and reports

    def flush(self) -> None:
        """Send the buffered step metrics (MLflow takes at most 1000 per batch)."""
        run_id, mlc = self.start(), client()
        while self._pending:
            with guard("metric logging"):
                mlc.log_batch(run_id, metrics=self._pending[:1000])
            del self._pending[:1000]

    def finish(self, prompt_dir: str | Path, metrics: Mapping[str, float],
               baselines: Mapping[str, Any] = (), report_files: Sequence[str | Path] = (),
               predictions: str | Path | None = None, validation_dir: str | Path | None = None) -> str:
        """Log final tuned metrics ("<split>/<metric>"), baselines ("baseline/<name>/<split>/<metric>";
        values are metric dicts or EvalResults) and artifacts, then end the run. Returns the run id."""
        hint = (f"The prompt is kept at {prompt_dir}; register it later with "
                f"`ptune register {prompt_dir} --task {self.task}`.")
        with guard(f"logging of the {self.task!r} run", hint):
            self.flush()
            final = {**metrics, **baseline_metrics(baselines)}
            stamp = _now_ms()
            client().log_batch(self.run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in final.items()])
            self._log_artifacts(prompt_dir, report_files, predictions, validation_dir)
            client().set_terminated(self.run_id, "FINISHED")
        return self.run_id

    def fail(self) -> None:
        """Mark the run FAILED (best effort: never hides the error that made the training fail)."""
        if self.run_id is not None:
            try:
                client().set_terminated(self.run_id, "FAILED")
            except (MlflowException, OSError):
                pass

    def _log_artifacts(self, prompt_dir: str | Path, report_files: Sequence[str | Path],
                       predictions: str | Path | None, validation_dir: str | Path | None) -> None:
        mlc = client()
        mlc.log_artifacts(self.run_id, str(prompt_dir), "prompt")
        for path in report_files:
            mlc.log_artifact(self.run_id, str(path), "report")
        if predictions is not None:
            mlc.log_artifact(self.run_id, str(predictions), "predictions")
        if validation_dir is not None and Path(validation_dir).is_dir():
            mlc.log_artifacts(self.run_id, str(validation_dir), "validation")


def baseline_metrics(baselines: Mapping[str, Any]) -> dict[str, float]:
    """{"zero_shot": {"test/accuracy": .6}} or {"zero_shot": EvalResult} -> {"baseline/zero_shot/test/accuracy": .6}."""
    out = {}
    for name, result in dict(baselines).items():
        for key, value in getattr(result, "metrics", result).items():
            out[f"baseline/{name}/{key}"] = float(value)
    return out


@dataclass(frozen=True)
class RegisteredPrompt:
    """What `register_prompt` created: the registered model, its version and the run behind it."""

    name: str
    version: str
    run_id: str
    model_uri: str


def register_prompt(task: str, prompt_dir: str | Path, run_id: str, primary_metric: str | None = None) -> RegisteredPrompt:
    """Log the pyfunc (from code; artifact = the prompt dir) in `run_id` and register a version of
    `ptune-<task>`, tagged with data version, git commit, base fingerprint, metric and baseline values."""
    _, meta = artifacts.load_prompt(prompt_dir)  # refuse to register a broken artifact
    primary = primary_metric or f"test/{_task_metrics(task)[0]}"
    mlc = client()
    hint = f"The prompt is kept at {prompt_dir}; retry with `ptune register {prompt_dir} --task {task}`."
    with guard(f"registration of {model_name(task)}", hint):
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(PYFUNC_MODEL_FILE), artifacts={"prompt": str(prompt_dir)},
                registered_model_name=model_name(task), pip_requirements=_pip_requirements())
        version = str(info.registered_model_version)
        run = mlc.get_run(run_id)
        tags = {"task": task, "data_version": meta.data_version, "base_model": meta.base_spec,
                "base_fingerprint": meta.base_fingerprint, "git_commit": run.data.params.get("git_commit", git_commit()),
                "primary_metric": primary, "run_id": run_id,
                **{k: repr(v) for k, v in run.data.metrics.items() if not k.startswith("train/")}}
        for key, value in tags.items():
            mlc.set_model_version_tag(model_name(task), version, key, value)
    return RegisteredPrompt(model_name(task), version, run_id, f"models:/{model_name(task)}/{version}")


def register_dir(prompt_dir: str | Path, task: str | None = None) -> RegisteredPrompt:
    """Register a prompt left on disk (e.g. when the tracking server was down): a new run is made from
    prompt.json (params, metrics), the prompt dir logged as its artifact, and a version registered."""
    _, meta = artifacts.load_prompt(prompt_dir)
    if task is not None and task != meta.task:
        raise RegistryError(f"{prompt_dir} holds a prompt for task {meta.task!r}, not {task!r}")
    params = {**meta.train_config, "task": meta.task, "base_model": meta.base_spec, "init": meta.init,
              "base_fingerprint": meta.base_fingerprint, "data_version": meta.data_version,
              "n_tokens": meta.n_tokens, "git_commit": git_commit(), "registered_from": str(prompt_dir)}
    run = TrainingRun(meta.task, params)
    metrics = {k: v for k, v in meta.metrics.items() if not k.startswith("baseline/")}
    baselines = {k: v for k, v in meta.metrics.items() if k.startswith("baseline/")}
    run.start()
    client().log_batch(run.run_id, metrics=[Metric(k, float(v), _now_ms(), 0) for k, v in baselines.items()])
    run.finish(prompt_dir, metrics)
    return register_prompt(meta.task, prompt_dir, run.run_id)


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
    shape, finiteness) with ptune.artifacts.load_prompt. Returns `out`."""
    ref = f"{model_name(task)}/{version}" if version is not None else f"{model_name(task)}@{alias}"
    target = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        client()
        with guard(f"download of models:/{ref}"):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{ref}", dst_path=tmp))
        source = _prompt_path(local)
        if source is None or not source.is_dir():
            raise RegistryError(f"models:/{ref} holds no prompt artifact (expected artifacts/prompt)")
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
    artifacts.load_prompt(target)
    return target


def pull(task: str, out: str | Path, alias: str = "champion", verify_base: bool = False) -> Path:
    """`ptune pull`: write the prompt of `ptune-<task>@alias` to `out`, verified (checksum always; with
    `verify_base`, loads the base model named in prompt.json and checks its fingerprint)."""
    target = download_prompt(task, out, alias=alias)
    if verify_base:
        from ptune.models import load_base_model

        _, meta = artifacts.load_prompt(target)
        base = load_base_model(meta.base_spec)
        artifacts.load_prompt(target, expected_fingerprint=base.fingerprint)
    return target


def load_prompt(task: str, alias: str = "champion") -> tuple[torch.Tensor, artifacts.PromptMeta]:
    """The prompt (P, d) and its PromptMeta behind `ptune-<task>@alias`, for Python users."""
    with tempfile.TemporaryDirectory() as tmp:
        return artifacts.load_prompt(download_prompt(task, Path(tmp) / "prompt", alias=alias))


def _prompt_path(model_dir: Path) -> Path | None:
    """Where the "prompt" artifact of a downloaded pyfunc model lies (MLflow keeps the source dir's name)."""
    flavor = mlflow.models.Model.load(str(model_dir)).flavors.get("python_function", {})
    relative = (flavor.get("artifacts") or {}).get("prompt", {}).get("path")
    return model_dir / relative if relative else None


def _task_metrics(task: str) -> tuple[str, ...]:
    from ptune.catalog import get_task

    return get_task(task).metrics


def _pip_requirements() -> list[str]:
    """Requirements recorded with the model. ptune itself is not on PyPI: it is expected installed in
    the serving environment (`pip install -e .`), hence `--env-manager local` (see docs/mlflow.md)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "torch", "transformers", "safetensors", "pandas")]


def _param(key: str, value: Any) -> Any:
    from mlflow.entities import Param

    return Param(key, str(value)[:6000])


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
