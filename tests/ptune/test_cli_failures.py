"""Every `ptune` command's failure path ends in one line on stderr and exit code 1, never a traceback: each
command is run once on input that cannot work (an unknown task, a missing file, an empty registry, a
folder that is no DVC project). A command added without a case here fails the first test."""

from __future__ import annotations

import sys

import pytest

from ptune.cli import app, main

MISSING = "/nonexistent/ptune-test"
FAILING = {
    "repro": [],  # the project folder is no DVC project
    "train": ["no_such_task"],
    "eval": ["rotten_tomatoes", "--prompt", MISSING],
    "report": ["rotten_tomatoes", "--prompt", MISSING],
    "predict": ["rotten_tomatoes", "a witty film", "--prompt", MISSING],
    "tasks": ["--params", "missing.yaml"],
    "fetch": ["no_such_task"],
    "dvc-inputs": ["--params", "missing.yaml"],
    "prepare": ["rotten_tomatoes"],  # nothing fetched
    "validate": ["rotten_tomatoes"],  # nothing prepared
    "register": [MISSING],
    "promote": ["rotten_tomatoes", "--version", "9"],  # an empty registry
    "pull": ["rotten_tomatoes", "--out", "pulled"],
    "export": [MISSING, "--peft", "adapter"],
    "import-peft": [MISSING, "--task", "rotten_tomatoes", "--out", "prompt"],
    "model-info": [MISSING],
    "sweep": ["no_such_task"],
    "interpret": [MISSING],
    "similar": ["no_such_task"],
    "reference": ["no_such_task", "--method", "lora"],
    "serve": ["--tasks", "no_such_task"],
    "sources": ["--params", "missing.yaml"],
}


def test_every_command_has_a_failure_case():
    assert sorted(c.name for c in app.registered_commands) == sorted(FAILING)


@pytest.fixture
def empty_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize("command", sorted(FAILING))
def test_a_failing_command_prints_one_line_and_exits_1(command, empty_project, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ptune", command, *FAILING[command]])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 1, err
    assert "Traceback" not in err
    problem = [line for line in err.splitlines() if line.startswith(("error:", "validation failed:"))]
    assert len(problem) == 1, err
