"""`ptune train`, `report`, `register`, `promote` by hand, as a new user runs them (tiny model, toy task,
real SQLite MLflow store): the report next to the prompt reaches the version, so promotion applies its rule;
registering the same prompt again gives the same version; the champion is re-evaluated with the same
example cap as the candidate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ptune.cli import app
from ptune.errors import RegistryError
from ptune.registry import model_registry
from tests.support import build_project, run_cli, use_project

CAP = 5  # evaluate.max_examples: candidate and champion are scored on the same first 5 test rows


@pytest.fixture
def project(tmp_path: Path, tiny_causal_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = build_project(tmp_path / "project", tiny_causal_dir, n_rows=80)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["evaluate"]["max_examples"] = CAP
    params["promote"]["min_gain"] = -1.0
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return use_project(root, monkeypatch)


ptune = run_cli  # the tests read as the commands a user types


def test_train_report_register_promote_by_hand(project):
    for step in ("fetch", "prepare", "train"):
        ptune(project, step, "toy")
    ptune(project, "report", "toy")
    report = json.loads((project / "metrics" / "toy.json").read_text())
    prompt_dir = project / "outputs" / "toy" / "prompt"

    out = ptune(project, "register", str(prompt_dir))
    assert "registered ptune-toy version 1" in out and "with the test and baseline metrics of its report" in out
    recorded = model_registry.version_metrics("toy", "1")  # LoggedModel metrics of the version
    for key in ("test/accuracy", "baseline/zero_shot/test/accuracy", "baseline/k_shot/test/accuracy"):
        assert recorded[key] == pytest.approx(report[key])
    assert "registered ptune-toy version 1" in ptune(project, "register", str(prompt_dir))  # same prompt: same version

    out = ptune(project, "promote", "toy", "--version", "1")
    assert "set ptune-toy@champion -> version 1" in out and "no baseline" not in out

    # a second candidate, trained elsewhere and registered without a report: the rule cannot apply, but the
    # champion is re-evaluated, on the same CAP examples as `ptune eval` scores it
    other = project / "outputs" / "other" / "prompt"
    ptune(project, "train", "toy", "--steps", "3", "--out", str(project / "outputs" / "other"))
    refused = CliRunner().invoke(app, ["register", str(other), "--params", str(project / "params.yaml")])
    message = str(refused.exception)  # the CLI's entry point prints a PtuneError's message and exits 1
    assert isinstance(refused.exception, RegistryError) and "no report of this prompt" in message  # toy's scored another
    assert str(project / "outputs" / "toy" / "report" / "scored_prompt.json") in message
    out = ptune(project, "register", str(other), "--without-report")
    assert "version 2" in out and "WITHOUT test or baseline metrics" in out
    out = ptune(project, "promote", "toy", "--version", "2")
    assert "set ptune-toy@challenger -> version 2" in out and "no baseline test/accuracy recorded" in out
    tags = MlflowClient().get_model_version("ptune-toy", "2").tags
    champion = json.loads(ptune(project, "eval", "toy", "--prompt", str(prompt_dir)))
    assert champion["test/n"] == CAP
    assert float(tags["promotion_champion_score"]) == pytest.approx(champion["test/accuracy"])

    # its report, written to outputs/toy/report and metrics/toy.json, reaches the version on a retry
    ptune(project, "report", "toy", "--prompt", str(other))
    report = json.loads((project / "metrics" / "toy.json").read_text())
    out = ptune(project, "register", str(other))
    assert "version 2" in out and "added" in out and "test/accuracy" in out
    assert model_registry.version_metrics("toy", "2")["test/accuracy"] == pytest.approx(report["test/accuracy"])
