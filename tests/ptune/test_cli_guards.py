"""The CLI refuses what would quietly give a wrong answer: a prompt trained for another task (unless --force),
a `--params` file that does not exist, a params file that is not UTF-8."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ptune.cli import app
from ptune.config import project_params
from ptune.errors import ArtifactError, ConfigError
from tests.ptune.registry.helpers import make_prompt


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path))
    return tmp_path


def test_prompt_for_another_task_refused_unless_force(tiny_causal, project):
    prompt = make_prompt(project / "prompt", tiny_causal)  # trained for rotten_tomatoes
    args = ["predict", "strategyqa", "Is the sky blue?", "--prompt", str(prompt), "--base", tiny_causal.spec]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, ArtifactError)
    assert str(result.exception) == (f"the prompt at {prompt} was trained for task 'rotten_tomatoes', not "
                                     "'strategyqa'; pass --force to use it anyway")
    forced = CliRunner().invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert forced.output.rstrip().endswith(("yes", "no"))  # the label (after the weight-loading bar)


@pytest.mark.parametrize("name", ["params.yaml", "typo.yaml"])
def test_params_naming_a_missing_file_is_an_error(project, name):
    result = CliRunner().invoke(app, ["tasks", "--params", name])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == f"{project / name}: params file not found"
    assert CliRunner().invoke(app, ["tasks"]).exit_code == 0  # no --params, no params.yaml: library defaults


def test_params_not_utf8_gets_a_clear_message(project):
    (project / "params.yaml").write_bytes("train:\n  lr: 0.3  # café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        project_params()
    assert str(err.value) == (f"{project / 'params.yaml'}: not UTF-8 text (byte 0xe9 at offset 23); "
                              "save it as UTF-8")
