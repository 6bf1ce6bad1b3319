"""`--out` of `pull`, `export --peft` and `import-peft` never deletes a directory it did not create: a non-empty
directory is replaced only when it already holds a prompt artifact or a PEFT adapter."""

from __future__ import annotations

import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ptune.cli import app
from ptune.model.artifacts import load_prompt
from ptune.registry.peft_interop import ADAPTER_CONFIG
from tests.ptune.registry.helpers import TASK, make_prompt, register, use_store


def _user_dir(path):
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    return path


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _refused(result, path, what: str, markers: str) -> None:
    assert result.exit_code != 0
    assert str(result.exception) == (f"refusing to replace {path}: it is not empty and holds no {what} ({markers}); "
                                     "choose another --out or empty it first")
    assert (path / "thesis.tex").read_text() == "years of work"


def test_export_refuses_a_foreign_directory_and_replaces_an_adapter(tiny_causal, tmp_path):
    prompt = make_prompt(tmp_path / "prompt", tiny_causal)
    user = _user_dir(tmp_path / "mine")
    _refused(_invoke("export", str(prompt), "--peft", str(user)), user, "PEFT adapter",
             "adapter_config.json or adapter_model.safetensors")
    assert sorted(p.name for p in user.iterdir()) == ["thesis.tex"]
    adapter = tmp_path / "adapter"
    assert _invoke("export", str(prompt), "--peft", str(adapter)).exit_code == 0
    assert _invoke("export", str(prompt), "--peft", str(adapter)).exit_code == 0  # its own output: replaced
    assert (adapter / ADAPTER_CONFIG).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _invoke("export", str(prompt), "--peft", str(empty)).exit_code == 0


def test_import_refuses_a_foreign_directory_and_replaces_a_prompt(tiny_causal, tmp_path):
    adapter = tmp_path / "adapter"
    assert _invoke("export", str(make_prompt(tmp_path / "prompt", tiny_causal)), "--peft", str(adapter)).exit_code == 0
    user = _user_dir(tmp_path / "mine")
    _refused(_invoke("import-peft", str(adapter), "--task", "t2", "--out", str(user)), user, "prompt artifact",
             "prompt.json or prompt.safetensors")
    old = make_prompt(tmp_path / "old", tiny_causal, seed=3)
    assert _invoke("import-peft", str(adapter), "--task", "t2", "--out", str(old)).exit_code == 0
    assert load_prompt(old)[1].task == "t2"


def test_out_naming_a_file_is_refused(tiny_causal, tmp_path):
    prompt = make_prompt(tmp_path / "prompt", tiny_causal)
    (tmp_path / "notes.txt").write_text("keep")
    result = _invoke("export", str(prompt), "--peft", str(tmp_path / "notes.txt"))
    assert str(result.exception) == (f"refusing to write PEFT adapter to {tmp_path / 'notes.txt'}: "
                                     "it exists and is not a directory")
    assert (tmp_path / "notes.txt").read_text() == "keep"


def test_pull_refuses_a_foreign_directory_and_replaces_a_pulled_prompt(tiny_causal, tmp_path, monkeypatch):
    use_store(tmp_path, monkeypatch)
    reg = register(tmp_path, tiny_causal, score=0.8)
    MlflowClient().set_registered_model_alias(reg.name, "champion", reg.version)
    user = _user_dir(tmp_path / "mine")
    _refused(_invoke("pull", TASK, "--out", str(user)), user, "prompt artifact", "prompt.json or prompt.safetensors")
    pulled = tmp_path / "pulled"
    for _ in range(2):  # the second pull replaces the first (it holds a prompt)
        result = _invoke("pull", TASK, "--out", str(pulled))
        assert result.exit_code == 0, result.output
    assert torch.equal(load_prompt(pulled)[0], load_prompt(tmp_path / "prompt-0-0.8")[0])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pulled")]  # no temp dirs left
