"""`make up MLFLOW=1 MLFLOW_PORT=5300`: the workers' summary artifacts link the MLflow UI on that port."""

from __future__ import annotations

from flows.common import train_summary_markdown
from flows.stack import stack_env

SUMMARY = {"task": "toy", "experiment_id": "3", "run_id": "abcdef0123456789", "model": "ptune-toy", "version": "2",
           "decision": "challenger", "reason": "tie", "model_uri": "models:/ptune-toy/2", "steps": 5,
           "train_seconds": 1.0, "best_step": 5, "base_model": "tiny"}


def test_workers_know_the_mlflow_ui_port(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PTUNE_MLFLOW_UI", raising=False)
    assert "PTUNE_MLFLOW_UI" not in stack_env(tmp_path, 4300)
    env = stack_env(tmp_path, 4300, 5300)
    assert env["PTUNE_MLFLOW_UI"] == "http://127.0.0.1:5300"
    monkeypatch.setenv("PTUNE_MLFLOW_UI", env["PTUNE_MLFLOW_UI"])
    md = train_summary_markdown(SUMMARY, "## toy\n")
    assert "http://127.0.0.1:5300/#/experiments/3/runs/abcdef0123456789" in md
    assert "http://127.0.0.1:5300/#/models/ptune-toy/versions/2" in md and ":5000" not in md
