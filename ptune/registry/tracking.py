"""MLflow tracking for ptune: the client, experiments, and one run per training (`TrainingRun`).

Tracking URI: `$MLFLOW_TRACKING_URI`, default `sqlite:///<project>/mlruns.db` with artifacts in
`<project>/mlartifacts` (`$PTUNE_MLFLOW_ARTIFACTS` overrides). Experiment `ptune/<task>`. The model
registry is `ptune.registry.model_registry`; every MLflow client call of ptune is in these two modules.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import DatasetInput, InputTag, Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ptune.errors import ArtifactError, RegistryError
from ptune.model.artifacts import PromptMeta
from ptune.paths import project_dir, redacted
from ptune.training.history import StepInfo

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) that holds the ptune package
_ENV_DEFAULTS = {  # telemetry off; HTTP retries bounded (~1+2+4 s back-off, 30 s timeout each)
    "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


# The experiment's kind in MLflow 3's UI (its header shows it as model training). Where a bare experiment link
# lands is decided by the UI's GenAI / model-training switch (GenAI in a fresh browser, MLflow 3.17), so ptune's
# links name the runs view: experiment_runs_url.
EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT = "mlflow.experimentKind", "custom_model_development"
def experiment_runs_url(ui: str, experiment_id: str) -> str:
    """The MLflow UI address of an experiment's runs table, whatever the browser's workflow switch says."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


RUN_KIND_TAG = "ptune.run_kind"  # train | reference | sweep | trial | register: also the run name's first word


def experiment_name(task: str) -> str:
    return f"ptune/{task}"


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
        uri = redacted(tracking_uri())
        first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else type(exc).__name__
        first = first.replace(tracking_uri(), uri)
        if re.search(r"\b503\b", first):
            first += " (the tracking server is up but cannot serve: is its database reachable? `make up` status)"
        raise RegistryError(f"MLflow {action} failed (tracking URI {uri}): {first}"
                            + (f"\n{hint}" if hint else "")) from exc



def ensure_experiment(task: str) -> str:
    """Id of experiment `ptune/<task>`, created (with the local artifact root) when missing, and marked as a
    training experiment (EXPERIMENT_KIND_TAG) so MLflow's UI opens it on its runs; an existing one that lacks
    the mark gets it (a kind someone chose in the UI is left alone)."""
    mlc = client()
    with guard(f"experiment lookup for {task!r}"):
        found = mlc.get_experiment_by_name(experiment_name(task))
        if found is not None:
            if EXPERIMENT_KIND_TAG not in found.tags:
                mlc.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT)
            return found.experiment_id
        root = artifact_root()
        location = (root / task).as_uri() if root is not None else None
        return mlc.create_experiment(experiment_name(task), artifact_location=location,
                                     tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT})


def git_commit(where: Path | None = None) -> str:
    """HEAD of the repository at `where` (default: the project) (+"-dirty" with uncommitted changes), or "unknown"."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=where or project_dir(), capture_output=True, text=True,  # noqa: E731
                                        timeout=10, check=True).stdout.strip()
        return run("rev-parse", "HEAD") + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def default_run_name(task: str, base_spec: str, kind: str = "train") -> str:
    """`<kind>-<task>-<model>-<UTC date and time>`, the model as its last path or hub-id component; the kind
    first (train, reference-lora, register, ...) so the runs table tells trainings from the other runs."""
    import datetime

    model = Path(str(base_spec).rstrip("/")).name or str(base_spec)
    return f"{kind}-{task}-{model}-{datetime.datetime.now(datetime.UTC):%Y%m%d-%H%M%S}"


def standard_tags(task: str) -> dict[str, str]:
    """The tags MLflow's UI shows for a run: user, source (the command that ran), and the commit of the code
    that ran (the repository holding the ptune package; left out when it is not a git checkout)."""
    tags = {"ptune.task": task, "mlflow.user": getpass.getuser(), "mlflow.source.type": "LOCAL",
            "mlflow.source.name": Path(sys.argv[0]).name or "ptune"}
    commit = git_commit(PACKAGE_ROOT).removesuffix("-dirty")
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


def training_params(task: str, base_spec: str, base_fingerprint: str, train_config: Mapping[str, Any],
                    data_version: str) -> dict[str, Any]:
    """The params every training run logs: the train config plus task, base model, data and code identity."""
    params = dict(train_config)
    params.update(task=task, base_model=base_spec, base_fingerprint=base_fingerprint,
                  data_version=data_version, git_commit=git_commit())
    return params


def run_for_prompt(meta: PromptMeta, **extra: Any) -> TrainingRun:
    """A new run for a prompt trained without one (untracked `ptune train`, a prompt left on disk): its
    params come from prompt.json, plus `extra` (e.g. registered_from)."""
    params = training_params(meta.task, meta.base_spec, meta.base_fingerprint, meta.train_config, meta.data_version)
    return TrainingRun(meta.task, {**params, "init": meta.init, "n_tokens": meta.n_tokens, **extra},
                       run_name=default_run_name(meta.task, meta.base_spec, "register"), kind="register")


class TrainingRun:
    """One MLflow run for one training; also the `callback(StepInfo)` handed to `train_prompt`.

    Steps are buffered and sent in batches (`flush_every`). Training never waits on MLflow: if the
    tracking server cannot be reached during training the run is marked offline and the buffered
    steps are sent by `finish`, which raises RegistryError when MLflow is still unreachable (the
    prompt stays on disk; `ptune register DIR --task T` registers it later)."""

    def __init__(self, task: str, params: Mapping[str, Any], flush_every: int = 20, *, run_name: str | None = None,
                 tags: Mapping[str, str] | None = None, kind: str = "train") -> None:
        self.task, self.params, self.flush_every = task, dict(params), flush_every
        tags = dict(tags or {})  # over standard_tags at start(); e.g. mlflow.parentRunId, the Prefect flow-run link
        self.run_name = (run_name or tags.pop("mlflow.runName", None)
                         or default_run_name(task, str(self.params.get("base_model", "model")), kind))
        self.tags = {RUN_KIND_TAG: kind,
                     **{k: str(v) for k, v in tags.items() if v is not None and k != "mlflow.runName"}}
        self.run_id: str | None = None
        self._pending: list[Metric] = []
        self._offline = False

    def start(self) -> str:
        """Create the run (in `ptune/<task>`) and log its params; returns the run id."""
        if self.run_id is None:
            mlc, experiment_id = client(), ensure_experiment(self.task)
            with guard(f"run creation for {self.task!r}"):
                run = mlc.create_run(experiment_id, run_name=self.run_name, tags={**standard_tags(self.task), **self.tags})
                self.run_id = run.info.run_id
                mlc.log_batch(self.run_id, params=[mlflow_param(k, v) for k, v in sorted(self.params.items())])
        return self.run_id

    def __call__(self, info: StepInfo) -> None:
        """Record one training step: train/loss, train/lr, train/step_seconds, train/skipped_steps (the spike
        guard's count so far) and, on evaluation steps, the validation metrics and validation/seconds (the
        validation pass alone), at `info.step`."""
        values = {"train/loss": info.loss, "train/lr": info.lr, "train/step_seconds": info.step_seconds,
                  "train/skipped_steps": info.skipped_steps,
                  "validation/seconds": info.validation_seconds, **(info.metrics or {})}
        stamp = now_ms()
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

    def finish(self, prompt_dir: str | Path | None, metrics: Mapping[str, float],
               baselines: Mapping[str, Any] = (), report_files: Sequence[str | Path] = (),
               predictions: str | Path | None = None, validation_dir: str | Path | None = None) -> str:
        """Log final tuned metrics ("<split>/<metric>"), baselines ("baseline/<name>/<split>/<metric>";
        values are metric dicts or EvalResults) and artifacts, then end the run. Returns the run id. No
        `prompt_dir` for runs that never register a prompt (reference models: their files go to report/)."""
        hint = (f"The prompt is kept at {prompt_dir}; register it later with "
                f"`ptune register {prompt_dir} --task {self.task}`.") if prompt_dir is not None else ""
        with guard(f"logging of the {self.task!r} run", hint):
            self.flush()
            final = {**metrics, **baseline_metrics(baselines)}
            stamp = now_ms()
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

    def _log_artifacts(self, prompt_dir: str | Path | None, report_files: Sequence[str | Path],
                       predictions: str | Path | None, validation_dir: str | Path | None) -> None:
        mlc = client()
        if prompt_dir is not None:
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


def log_training_data(run_id: str, task: str, data_version: str, rows: Mapping[str, Sequence[Any]],
                       source: str | Path) -> None:
    """The prepared data as the run's input dataset (MLflow `log_input`): name = task, digest = data version,
    the train split's schema and row count as its profile, every split's row count as input tags."""
    import pandas as pd

    frame = pd.DataFrame([{"source": e.source, "target": e.target} for e in rows.get("train", ())],
                         columns=["source", "target"])
    dataset = mlflow.data.from_pandas(frame, source=_local_source(source), targets="target", name=task,
                                      digest=data_version)
    tags = [InputTag("mlflow.data.context", "training"), InputTag("data_version", data_version),
            *(InputTag(f"rows.{split}", str(len(found))) for split, found in rows.items())]
    with guard(f"dataset logging for {task!r}"):
        client().log_inputs(run_id, [DatasetInput(dataset._to_mlflow_entity(), tags)])


def _local_source(path: str | Path) -> Any:
    """The prepared data directory as a local-file dataset source. MLflow registers two local-artifact source
    classes that both accept a plain path (and warns "can be interpreted in multiple ways"); naming the
    class keeps the record the same and the log quiet."""
    from mlflow.data.dataset_source_registry import get_registered_sources, resolve_dataset_source

    local = [c for c in get_registered_sources() if c.__name__ == "LocalArtifactDatasetSource"][:1]
    return resolve_dataset_source(str(path), candidate_sources=local or None)


def mlflow_param(key: str, value: Any) -> Any:
    from mlflow.entities import Param

    return Param(key, str(value)[:6000])


def now_ms() -> int:
    import time

    return int(time.time() * 1000)


def log_final_metrics(run_id: str, metrics: Mapping[str, float]) -> None:
    """Log step-0 metrics on a run (e.g. the baselines recorded in a prompt.json)."""
    with guard("metric logging"):
        client().log_batch(run_id, metrics=[Metric(k, float(v), now_ms(), 0) for k, v in metrics.items()])


def log_model_metrics(run_id: str, model_id: str, metrics: Mapping[str, float]) -> None:
    """Link final metrics to a LoggedModel (MLflow 3): they show on the model and its registered versions."""
    stamp = now_ms()
    with guard("model metric logging"):
        client().log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0, model_id=model_id) for k, v in metrics.items()])


def find_run(task: str, params: Mapping[str, str]) -> str | None:
    """The id of the oldest run of `ptune/<task>` whose params hold all of `params`, or None."""
    query = " and ".join(f"params.{k} = '{v}'" for k, v in params.items())
    with guard(f"run search in {experiment_name(task)}"):
        found = client().search_runs([ensure_experiment(task)], query, order_by=["attributes.start_time ASC"],
                                     max_results=1)
    return found[0].info.run_id if found else None


def run_record(run_id: str) -> tuple[dict[str, str], dict[str, float]]:
    """(params, latest metrics) of a run."""
    with guard(f"lookup of run {run_id}"):
        run = client().get_run(run_id)
    return dict(run.data.params), dict(run.data.metrics)


def resume(task: str, run_id: str) -> TrainingRun:
    """A `TrainingRun` object for an existing run (e.g. to finish it in a later step or process)."""
    run = TrainingRun(task, {})
    run.run_id = run_id
    return run
