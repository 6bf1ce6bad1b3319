"""A prompt never chooses which model gets loaded: only the configured base (params.yaml `model`), the one the
user names (`--base`) or, for a registered version, the one its registry tag names; prompt.json must name it,
and that is checked before anything is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ptune.cli import app
from ptune.errors import ArtifactError
from ptune.model.artifacts import PromptMeta, save_prompt
from ptune.registry import loading
from ptune.registry.loading import load_prompt_with_base
from tests.ptune.registry.helpers import TASK, register, use_store
from tests.tiny_models import build_causal


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_store(tmp_path, monkeypatch)


def _configure(store: Path, model: Path | str) -> None:
    (store / "project" / "params.yaml").write_text(yaml.safe_dump({"model": str(model)}))


def _no_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "load_base_model", lambda spec, **kw: pytest.fail(f"loaded the base model {spec}"))


def test_a_prompt_naming_another_model_directory_is_refused_before_any_load(store, tiny_causal, tiny_causal_dir,
                                                                          tmp_path, monkeypatch):
    """prompt.json forged to name another local model directory (a loadable one): refused by the library and
    by `ptune predict --prompt`, and the loader is never called."""
    other = build_causal(tmp_path / "other-model", seed=1)
    forged = save_prompt(tmp_path / "forged", torch.randn(4, tiny_causal.hidden_size),
                         PromptMeta(TASK, str(other), tiny_causal.fingerprint))
    _configure(store, tiny_causal_dir)
    _no_loads(monkeypatch)
    expected = (rf"names the base model '{other}', but the base model allowed here is '{tiny_causal_dir}' .*"
                r"nothing was loaded")
    with pytest.raises(ArtifactError, match=expected):
        load_prompt_with_base(forged)
    result = CliRunner().invoke(app, ["predict", TASK, "a fine film", "--prompt", str(forged)])
    assert result.exit_code != 0 and isinstance(result.exception, ArtifactError), result.output
    assert f"allowed here is '{tiny_causal_dir}'" in str(result.exception)


def test_the_user_names_the_base_with_dash_dash_base(store, tiny_causal, tiny_causal_dir, tmp_path, monkeypatch):
    """params.yaml configures another model: the prompt is refused until `--base` names the one it was
    trained on, which is then the model loaded (the prompt's fingerprint agrees)."""
    prompt = save_prompt(tmp_path / "p", torch.randn(4, tiny_causal.hidden_size),
                         PromptMeta(TASK, str(tiny_causal_dir), tiny_causal.fingerprint))
    _configure(store, tmp_path / "configured-model")
    refused = CliRunner().invoke(app, ["predict", TASK, "a fine film", "--prompt", str(prompt)])
    assert refused.exit_code != 0 and f"allowed here is '{tmp_path / 'configured-model'}'" in str(refused.exception)
    named = CliRunner().invoke(app, ["predict", TASK, "a fine film", "--prompt", str(prompt),
                                     "--base", str(tiny_causal_dir)])
    assert named.exit_code == 0, named.output
    assert named.stdout.strip() in {"negative", "positive"}


def test_a_registered_prompt_loads_the_base_its_registry_tag_names(store, tiny_causal, tmp_path, monkeypatch):
    """`ptune pull --verify-base` and `load_prompt_with_base(models:/...)` load the version's `base_model` tag,
    whatever params.yaml says; `pull --base` naming another model is refused before any load."""
    register(tmp_path, tiny_causal, score=0.9)
    _configure(store, tmp_path / "configured-model")
    uri = f"models:/ptune-{TASK}/1"
    assert load_prompt_with_base(uri).base.fingerprint == tiny_causal.fingerprint
    pulled = CliRunner().invoke(app, ["pull", TASK, "--out", str(tmp_path / "a"), "--alias", "x", "--verify-base"])
    assert pulled.exit_code != 0  # no such alias: the download names it
    from mlflow.tracking import MlflowClient

    MlflowClient().set_registered_model_alias(f"ptune-{TASK}", "champion", "1")
    pulled = CliRunner().invoke(app, ["pull", TASK, "--out", str(tmp_path / "a"), "--verify-base"])
    assert pulled.exit_code == 0, pulled.output
    _no_loads(monkeypatch)
    other = str(tmp_path / "other-model")
    refused = CliRunner().invoke(app, ["pull", TASK, "--out", str(tmp_path / "b"), "--base", other])
    assert refused.exit_code != 0 and f"allowed here is '{other}'" in str(refused.exception), refused.output
    with pytest.raises(ArtifactError, match=f"allowed here is '{other}'"):
        load_prompt_with_base(uri, base_spec=other)
