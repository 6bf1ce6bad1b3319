"""`--out` of `pull`, `export --peft` and `import-peft` never deletes a file it did not write: an existing directory
is replaced only when every entry in it is a file of that artifact kind (ptune.fileio.check_replaceable), and the
replaced directory keeps its mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ptune.cli import app
from ptune.model.artifacts import META_FILE, TENSOR_FILE, load_prompt
from ptune.registry.peft_interop import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from tests.ptune.registry.helpers import TASK, make_prompt, register, use_store

NOTES = b"meeting notes, not a prompt\n"


@pytest.fixture
def umask_022():
    """A known umask, so that a new directory's expected mode (0755) differs from mkdtemp's 0700."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _notes_beside(path: Path, marker: str) -> dict[str, bytes]:
    """`path` holding notes.txt and one marker file of the artifact kind; returns its contents."""
    path.mkdir(parents=True)
    (path / "notes.txt").write_bytes(NOTES)
    (path / marker).write_bytes(b'{"a marker": "kept"}\n')
    return _contents(path)


def _contents(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _refused_naming_notes(result, path: Path, kept: dict[str, bytes], what: str) -> None:
    """Non-zero exit, a one-line ArtifactError naming the folder and notes.txt, every file byte-for-byte kept."""
    assert result.exit_code != 0
    message = str(result.exception)
    assert message == (f"refusing to replace {path}: notes.txt is not part of a {what}; "
                       "move it away or choose another output directory")
    assert "\n" not in message
    assert _contents(path) == kept
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]  # no temp dir left


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("marker", [ADAPTER_CONFIG, ADAPTER_WEIGHTS])
def test_export_keeps_notes_beside_an_adapter_file(tiny_causal, tmp_path, marker):
    prompt = make_prompt(tmp_path / "prompt", tiny_causal)
    kept = _notes_beside(tmp_path / "adapter", marker)
    _refused_naming_notes(_invoke("export", str(prompt), "--peft", str(tmp_path / "adapter")), tmp_path / "adapter",
                          kept, "PEFT adapter")


@pytest.mark.parametrize("marker", [META_FILE, TENSOR_FILE])
def test_import_keeps_notes_beside_a_prompt_file(tiny_causal, tmp_path, marker):
    adapter = tmp_path / "adapter"
    assert _invoke("export", str(make_prompt(tmp_path / "prompt", tiny_causal)), "--peft", str(adapter)).exit_code == 0
    kept = _notes_beside(tmp_path / "mine", marker)
    _refused_naming_notes(_invoke("import-peft", str(adapter), "--task", "t2", "--out", str(tmp_path / "mine")),
                          tmp_path / "mine", kept, "prompt artifact")


def test_pull_keeps_notes_beside_a_prompt_file(tiny_causal, tmp_path, monkeypatch):
    use_store(tmp_path, monkeypatch)
    reg = register(tmp_path, tiny_causal, score=0.8)
    MlflowClient().set_registered_model_alias(reg.name, "champion", reg.version)
    kept = _notes_beside(tmp_path / "mine", META_FILE)
    _refused_naming_notes(_invoke("pull", TASK, "--out", str(tmp_path / "mine")), tmp_path / "mine", kept,
                          "prompt artifact")


def test_export_replaces_its_own_adapter_keeping_the_mode(tiny_causal, tmp_path, umask_022):
    prompt = make_prompt(tmp_path / "prompt", tiny_causal)
    adapter = tmp_path / "adapter"
    assert _invoke("export", str(prompt), "--peft", str(adapter)).exit_code == 0
    assert _mode(adapter) == 0o755  # new: the umask's mode, not mkdtemp's 0700
    adapter.chmod(0o750)
    (adapter / ADAPTER_CONFIG).write_text("{}")  # replaced below: only adapter files are there
    assert _invoke("export", str(prompt), "--peft", str(adapter)).exit_code == 0
    assert sorted(p.name for p in adapter.iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    assert (adapter / ADAPTER_CONFIG).read_text() != "{}" and _mode(adapter) == 0o750
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    assert _invoke("export", str(prompt), "--peft", str(empty)).exit_code == 0
    assert (empty / ADAPTER_WEIGHTS).is_file() and _mode(empty) == 0o700


def test_import_replaces_a_prompt_keeping_the_mode(tiny_causal, tmp_path):
    adapter = tmp_path / "adapter"
    assert _invoke("export", str(make_prompt(tmp_path / "prompt", tiny_causal)), "--peft", str(adapter)).exit_code == 0
    old = make_prompt(tmp_path / "old", tiny_causal, seed=3)
    old.chmod(0o750)
    assert _invoke("import-peft", str(adapter), "--task", "t2", "--out", str(old)).exit_code == 0
    assert load_prompt(old)[1].task == "t2" and _mode(old) == 0o750


def test_a_foreign_directory_is_refused_and_named(tiny_causal, tmp_path):
    prompt = make_prompt(tmp_path / "prompt", tiny_causal)
    user = tmp_path / "mine"
    (user / "chapters").mkdir(parents=True)
    (user / "thesis.tex").write_text("years of work")
    result = _invoke("export", str(prompt), "--peft", str(user))
    assert result.exit_code != 0
    assert str(result.exception) == (f"refusing to replace {user}: chapters/, thesis.tex are not part of a PEFT "
                                     "adapter; move them away or choose another output directory")
    assert (user / "thesis.tex").read_text() == "years of work" and (user / "chapters").is_dir()


def test_out_naming_a_file_is_refused(tiny_causal, tmp_path):
    prompt = make_prompt(tmp_path / "prompt", tiny_causal)
    (tmp_path / "notes.txt").write_text("keep")
    result = _invoke("export", str(prompt), "--peft", str(tmp_path / "notes.txt"))
    assert str(result.exception) == (f"refusing to write PEFT adapter to {tmp_path / 'notes.txt'}: "
                                     "it exists and is not a directory")
    assert (tmp_path / "notes.txt").read_text() == "keep"


def test_pull_replaces_a_pulled_prompt_keeping_the_mode(tiny_causal, tmp_path, monkeypatch):
    use_store(tmp_path, monkeypatch)
    reg = register(tmp_path, tiny_causal, score=0.8)
    MlflowClient().set_registered_model_alias(reg.name, "champion", reg.version)
    pulled = tmp_path / "pulled"
    assert _invoke("pull", TASK, "--out", str(pulled)).exit_code == 0
    pulled.chmod(0o750)
    (pulled / TENSOR_FILE).write_bytes(b"stale")  # replaced below: only prompt files are there
    result = _invoke("pull", TASK, "--out", str(pulled))
    assert result.exit_code == 0, result.output
    assert _mode(pulled) == 0o750
    assert torch.equal(load_prompt(pulled)[0], load_prompt(tmp_path / "prompt-0-0.8")[0])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pulled")]  # no temp dirs left
