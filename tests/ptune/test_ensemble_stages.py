"""Prompt ensembles through the pipeline: train K, score together, report, register one version, pull, pyfunc."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ptune.cli import app
from ptune.config import load_params
from ptune.model.ensemble_artifact import load_ensemble
from ptune.pipeline import stages
from ptune.registry import model_registry
from ptune.studies import ensemble


def test_ensemble_is_trained_reported_and_registered_as_one_version(toy_project, tmp_path):
    run = stages.TaskRun.build("toy", load_params(toy_project / "params.yaml"), run_dir=tmp_path / "run",
                               train={"max_steps": 2, "eval_every": 2})
    stages.fetch(run), stages.prepare(run)
    base = stages.load_base(run)
    trained = ensemble.train_ensemble(run, base, 3)
    seeds = [m.meta.train_config["seed"] for m in trained.members]
    assert seeds == [0, 1, 2] and not torch.equal(trained.members[0].prompt, trained.members[1].prompt)
    found = ensemble.evaluate_ensemble(run, base, trained.directory)
    for member, alone in zip(found.members, trained.members, strict=True):  # one batch == each prompt alone
        assert member.metrics == stages.evaluate(run, base, alone.prompt, progress=False).metrics
    reported = ensemble.report_ensemble(run, found, stages.baselines(run, base, progress=False), trained)
    metrics = json.loads(reported.files.metrics.read_text())
    assert metrics["test/accuracy"] == found.ensemble.metrics["test/accuracy"] and metrics["ensemble/k"] == 3
    assert metrics["ensemble/best_single/test/accuracy"] == round(found.best_single, 6)
    assert "(ensemble.md)" in reported.files.markdown.read_text()
    assert "| mean of 3 prompts |" in (run.paths.report_dir / "ensemble.md").read_text()

    registered = ensemble.register_ensemble(run, trained, reported, found)
    pulled = model_registry.download_prompt("toy", tmp_path / "pulled", version=registered.version)
    assert torch.equal(load_ensemble(pulled).prompts, load_ensemble(trained.directory).prompts)
    card = MlflowClient().get_model_version("ptune-toy", registered.version).description
    assert "ensemble of 3 prompts" in card
    model = mlflow.pyfunc.load_model(registered.model_uri)
    texts = [ex.fields["text"] for ex in run.examples("test")]
    assert model.predict(pd.DataFrame({"text": texts})) == found.ensemble.predictions


def test_cli_train_ensemble_with_vote(toy_project, tmp_path):
    result = CliRunner().invoke(app, ["train", "toy", "--ensemble", "2", "--method", "vote", "--steps", "1",
                                      "--out", str(tmp_path / "out"), "--params", str(toy_project / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert '"method": "vote"' in result.output and '"ensemble/k": 2' in result.output
    found = load_ensemble(tmp_path / "out" / "ensemble_prompt")
    assert found.method == "vote" and found.prompts.shape[0] == 2
    one = CliRunner().invoke(app, ["train", "toy", "--ensemble", "1", "--params", str(toy_project / "params.yaml")])
    assert one.exit_code != 0 and "at least 2 prompts" in str(one.exception)


def test_cli_train_ensemble_keeps_notes_beside_an_ensemble(toy_project, tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before refusing the output folder")

    run = stages.TaskRun.build("toy", load_params(toy_project / "params.yaml"), run_dir=tmp_path / "run")
    stages.fetch(run), stages.prepare(run)  # the split `train` reads (whichever test runs first)
    target = tmp_path / "out" / "ensemble_prompt"
    target.mkdir(parents=True)
    (target / "notes.txt").write_bytes(b"mine")
    (target / "ensemble.json").write_bytes(b"{}")
    monkeypatch.setattr(stages, "train_prompt", no_training)  # the refusal comes before any training
    result = CliRunner().invoke(app, ["train", "toy", "--ensemble", "2", "--steps", "1", "--out", str(tmp_path / "out"),
                                      "--params", str(toy_project / "params.yaml")])
    assert result.exit_code != 0
    assert str(result.exception) == (f"refusing to replace {target}: notes.txt is not part of a prompt artifact; "
                                     "move it away or choose another output directory")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == {"notes.txt": b"mine", "ensemble.json": b"{}"}


def test_cli_train_refuses_a_prompt_folder_with_other_files_before_training(toy_project, tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before refusing the output folder")

    run = stages.TaskRun.build("toy", load_params(toy_project / "params.yaml"), run_dir=tmp_path / "out")
    stages.fetch(run), stages.prepare(run)
    run.paths.prompt_dir.mkdir(parents=True)
    (run.paths.prompt_dir / "notes.txt").write_bytes(b"mine")
    monkeypatch.setattr(stages, "train_prompt", no_training)
    result = CliRunner().invoke(app, ["train", "toy", "--steps", "1", "--out", str(tmp_path / "out"),
                                      "--params", str(toy_project / "params.yaml")])
    assert result.exit_code != 0 and "notes.txt is not part of a prompt artifact" in str(result.exception)
    assert (run.paths.prompt_dir / "notes.txt").read_bytes() == b"mine"
