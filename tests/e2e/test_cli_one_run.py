"""One task run by hand is one MLflow run: `ptune train`, `report`, `register`, `promote` (tiny model, toy task,
real SQLite MLflow store) leave one run holding the loss curve, the report's metrics and files, and the logged
model the version was registered from; the version's card shows the test metrics and split sizes its tags and
the prepared data hold. A prompt trained with `--no-track` still gets its own run at registration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptune.registry import run_link, tracking
from tests.support import TRAIN, build_project, run_cli, use_project


@pytest.fixture
def project(tmp_path: Path, tiny_causal_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = build_project(tmp_path / "project", tiny_causal_dir, n_rows=40)
    return use_project(root, monkeypatch)


ptune = run_cli  # the tests read as the commands a user types


def runs_of(task: str) -> list:
    experiment = tracking.ensure_experiment(task)  # first: it points MLflow at this test's store
    return tracking.client().search_runs([experiment])


def test_train_report_register_promote_is_one_run_and_the_card_agrees_with_the_tags(project):
    for step in ("fetch", "prepare", "train", "report"):
        ptune(project, step, "toy")
    out = ptune(project, "register", str(project / "outputs" / "toy" / "prompt"))
    assert "registered ptune-toy version 1" in out
    ptune(project, "promote", "toy", "--version", "1")

    mlc = tracking.client()
    (run,) = runs_of("toy")  # no second "register-..." run beside the training run
    version = mlc.get_model_version("ptune-toy", "1")
    assert version.run_id == version.tags["run_id"] == run.info.run_id
    assert run.info.run_name.startswith("train-toy-") and run.info.status == "FINISHED"
    assert len(mlc.get_metric_history(run.info.run_id, "train/loss")) == TRAIN["max_steps"]  # the loss curve
    report = json.loads((project / "metrics" / "toy.json").read_text())
    assert run.data.metrics["test/accuracy"] == pytest.approx(report["test/accuracy"])
    assert {a.path for a in mlc.list_artifacts(run.info.run_id, "report")} >= {
        "report/report.md", "report/toy.json", "report/tuned_vs_baseline.png", "report/train_curve.csv"}
    assert mlc.get_logged_model(version.model_id or version.source.removeprefix("models:/")).source_run_id == \
        run.info.run_id

    card = version.description
    assert "No test metrics were recorded" not in card and "split sizes: unknown" not in card
    assert f"| tuned prompt | {float(version.tags['test/accuracy']):.4f}" in card
    counts = json.loads((project / "data" / "prepared" / "toy" / "data_version.json").read_text())["counts"]
    assert f"prepared split sizes: train {counts['train']}, validation {counts['validation']}, " \
           f"test {counts['test']}" in card


def test_a_prompt_trained_without_tracking_gets_its_own_run_at_registration(project):
    for step in ("fetch", "prepare"):
        ptune(project, step, "toy")
    ptune(project, "train", "toy", "--steps", "2", "--no-track")
    assert runs_of("toy") == [] and not (project / "outputs" / "toy" / run_link.LINK).exists()
    ptune(project, "report", "toy")
    out = ptune(project, "register", str(project / "outputs" / "toy" / "prompt"))
    assert "registered ptune-toy version 1" in out
    (run,) = runs_of("toy")
    assert run.info.run_name.startswith("register-toy-") and "train/loss" not in run.data.metrics
    assert tracking.client().get_model_version("ptune-toy", "1").run_id == run.info.run_id


def test_a_link_to_another_prompt_is_not_followed(project):
    """The link names the prompt it trained by hash: a prompt replaced since is registered in a new run."""
    for step in ("fetch", "prepare"):
        ptune(project, step, "toy")
    ptune(project, "train", "toy", "--steps", "2")
    (trained,) = runs_of("toy")
    prompt_dir = project / "outputs" / "toy" / "prompt"
    assert run_link.training_run(prompt_dir) == trained.info.run_id
    info = json.loads((project / "outputs" / "toy" / run_link.LINK).read_text())
    (project / "outputs" / "toy" / run_link.LINK).write_text(json.dumps({**info, "prompt_sha256": "0" * 64}))
    assert run_link.training_run(prompt_dir) is None
    reg = ptune(project, "register", str(prompt_dir), "--without-report")
    assert "version 1" in reg and trained.info.run_id not in reg
