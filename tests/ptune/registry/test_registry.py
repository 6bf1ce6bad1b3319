"""MLflow tracking and registry against real stores: SQLite in tmp_path and one real `mlflow server`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ptune.cli import app
from ptune.config import TrainConfig
from ptune.data.catalog import get_task
from ptune.errors import ArtifactError, RegistryError
from ptune.model import artifacts
from ptune.registry import model_registry, tracking
from ptune.registry.loading import load_prompt_with_base
from ptune.registry.promotion import promote_if_better
from ptune.training.train import train_prompt
from tests.ptune.registry.helpers import (
    TASK,
    examples,
    make_prompt,
    register,
    start,
    stop,
    use_store,
    wait_http,
)
from tests.support import free_port


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fresh SQLite tracking/registry store, project dir and PTUNE_HOME under tmp_path."""
    return use_store(tmp_path, monkeypatch)



def _artifact_paths(mlc: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for item in mlc.list_artifacts(run_id, path):
        out |= _artifact_paths(mlc, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_training_run_logs_params_curves_metrics_and_artifacts(store, tiny_causal, tmp_path):
    """A real train_prompt with the TrainingRun as callback: every param, per-step metric and artifact lands."""
    spec, data = get_task(TASK), examples()
    cfg = TrainConfig(n_tokens=3, init="random", max_steps=4, eval_every=2, batch_size=2, checkpoint_every=0, lr=0.1)
    params = tracking.training_params(TASK, tiny_causal.spec, tiny_causal.fingerprint, cfg.to_dict(), "dv1")
    run = tracking.TrainingRun(TASK, params, flush_every=3)
    result = train_prompt(tiny_causal, spec, data, data[:2], cfg, tmp_path / "out", callback=run)
    prompt_dir = make_prompt(tmp_path / "prompt", tiny_causal)
    (tmp_path / "report.md").write_text("| | tuned |\n")
    (tmp_path / "curve.png").write_bytes(b"\x89PNG")
    (tmp_path / "predictions.jsonl").write_text('{"id": "0", "prediction": "positive"}\n')
    (tmp_path / "gx").mkdir()
    (tmp_path / "gx" / "test.html").write_text("<html>ok</html>")
    run_id = run.finish(prompt_dir, {"test/accuracy": 0.75}, {"zero_shot": {"test/accuracy": 0.5}, "k_shot": {"test/accuracy": 0.6}},
                        report_files=[tmp_path / "report.md", tmp_path / "curve.png"],
                        predictions=tmp_path / "predictions.jsonl", validation_dir=tmp_path / "gx")

    mlc = MlflowClient()
    logged = mlc.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert mlc.get_experiment(logged.info.experiment_id).name == f"ptune/{TASK}"
    assert mlc.get_experiment(logged.info.experiment_id).artifact_location.startswith((store / "mlartifacts").as_uri())
    expected = {"task": TASK, "base_model": tiny_causal.spec, "base_fingerprint": tiny_causal.fingerprint,
                "n_tokens": "3", "init": "random", "optimizer": "adafactor", "lr": "0.1", "max_steps": "4",
                "seed": "0", "data_version": "dv1"}
    assert {k: logged.data.params[k] for k in expected} == expected
    assert logged.data.params["git_commit"]
    losses = mlc.get_metric_history(run_id, "train/loss")
    assert [m.step for m in sorted(losses, key=lambda m: m.step)] == [1, 2, 3, 4]
    assert [m.value for m in sorted(losses, key=lambda m: m.step)] == pytest.approx([h.loss for h in result.history])
    assert sorted(m.step for m in mlc.get_metric_history(run_id, "validation/accuracy")) == [2, 4]
    assert logged.data.metrics["test/accuracy"] == 0.75
    assert logged.data.metrics["baseline/zero_shot/test/accuracy"] == 0.5
    assert logged.data.metrics["baseline/k_shot/test/accuracy"] == 0.6
    assert _artifact_paths(mlc, run_id) >= {"prompt/prompt.json", "prompt/prompt.safetensors", "report/report.md",
                                            "report/curve.png", "predictions/predictions.jsonl", "validation/test.html"}


def test_register_tags_pull_and_load_prompt(store, tiny_causal, tmp_path):
    reg = register(tmp_path, tiny_causal, score=0.8, baseline=0.6)
    promote_if_better(TASK, reg.version, evaluator=lambda *a: pytest.fail("no champion to re-evaluate"))
    tags = model_registry.version_tags(TASK, reg.version)
    assert tags["data_version"] == "dv-test" and tags["base_fingerprint"] == tiny_causal.fingerprint
    assert tags["git_commit"] and tags["primary_metric"] == "test/accuracy"
    assert float(tags["test/accuracy"]) == 0.8 and float(tags["baseline/zero_shot/test/accuracy"]) == 0.6
    assert "promotion_reason" in tags

    out = tmp_path / "pulled"
    result = CliRunner().invoke(app, ["pull", TASK, "--out", str(out), "--verify-base"])
    assert result.exit_code == 0, result.output
    original, _ = artifacts.load_prompt(tmp_path / "prompt-0-0.8")
    pulled, meta = artifacts.load_prompt(out, expected_fingerprint=tiny_causal.fingerprint)
    assert torch.equal(original, pulled)
    tensor, meta2 = model_registry.load_registered_prompt(TASK, alias="champion")
    assert torch.equal(tensor, original) and meta2 == meta


def test_pull_refuses_tampered_artifact_and_foreign_base(store, tiny_causal, tmp_path):
    bad = register(tmp_path, tiny_causal, score=0.8, seed=1, fingerprint="0" * 32)
    MlflowClient().set_registered_model_alias(bad.name, "champion", bad.version)  # pull is under test, not promotion
    with pytest.raises(ArtifactError, match="base model mismatch"):
        load_prompt_with_base("models:/ptune-rotten_tomatoes@champion")
    result = CliRunner().invoke(app, ["pull", TASK, "--out", str(tmp_path / "c"), "--verify-base"])
    assert result.exit_code != 0 and "base model mismatch" in str(result.exception or result.output)
    good = register(tmp_path, tiny_causal, score=0.9, seed=2)
    stored = _stored_tensor_file(store, good.version)
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF  # flip one bit of the embedding values
    stored.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        model_registry.download_prompt(TASK, tmp_path / "b", alias=None, version=good.version)


def _stored_tensor_file(store: Path, version: str) -> Path:
    source = MlflowClient().get_model_version(model_registry.model_name(TASK), version).source
    model = MlflowClient().get_logged_model(source.removeprefix("models:/"))
    root = Path(model.artifact_location.removeprefix("file://"))
    return next(root.glob("artifacts/*/prompt.safetensors"))


def test_unreachable_server_fails_clearly_and_prompt_can_be_registered_later(store, tiny_causal, tmp_path, monkeypatch):
    port = free_port()  # bound then released: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    spec, data = get_task(TASK), examples()
    cfg = TrainConfig(n_tokens=3, init="random", max_steps=2, eval_every=0, batch_size=2, checkpoint_every=0)
    run = tracking.TrainingRun(TASK, {"task": TASK}, flush_every=1)
    result = train_prompt(tiny_causal, spec, data, [], cfg, tmp_path / "out", callback=run)  # training is not stopped
    prompt_dir = make_prompt(tmp_path / "prompt", tiny_causal, metrics={"test/accuracy": 0.7,
                                                                        "baseline/zero_shot/test/accuracy": 0.5})
    assert result.steps_run == 2
    with pytest.raises(RegistryError) as info:
        run.finish(prompt_dir, {"test/accuracy": 0.7})
    message = str(info.value)
    assert f"http://127.0.0.1:{port}" in message and f"ptune register {prompt_dir} --task {TASK}" in message
    artifacts.load_prompt(prompt_dir)  # still on disk, intact

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlruns.db'}")
    result = CliRunner().invoke(app, ["register", str(prompt_dir), "--task", TASK])
    assert result.exit_code == 0, result.output
    tags = model_registry.version_tags(TASK, "1")
    assert float(tags["test/accuracy"]) == 0.7 and float(tags["baseline/zero_shot/test/accuracy"]) == 0.5


def test_against_real_mlflow_server(store, tiny_causal, tmp_path, monkeypatch):
    """Log, register, promote and pull through a real `mlflow server` on 127.0.0.1 (no job runners)."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    proc = start(cmd, tmp_path / "server.log", {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, tmp_path / "server.log")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        reg = register(tmp_path, tiny_causal, score=0.7, seed=1)
        decision = promote_if_better(TASK, reg.version, evaluator=lambda *a: pytest.fail("no champion yet"))
        assert decision.promoted and model_registry.alias_version(TASK, "champion").version == reg.version
        assert "beats best baseline" in model_registry.version_tags(TASK, reg.version)["promotion_reason"]
        tensor, meta = model_registry.load_registered_prompt(TASK)
        assert meta.base_fingerprint == tiny_causal.fingerprint and tensor.shape == (4, tiny_causal.hidden_size)
        assert list((tmp_path / "server-artifacts").rglob("prompt.safetensors"))  # stored by the server
    finally:
        stop(proc)
