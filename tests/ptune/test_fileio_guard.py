"""ptune.fileio's guard on replaced directories: only entries of the directory's kind may be replaced, nothing
else is ever deleted, modes are kept, and every `atomic_dir` writer in ptune/ names its kind."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

from ptune.errors import ArtifactError
from ptune.fileio import DirKind, atomic_dir, atomic_write_text, check_replaceable
from ptune.model.artifacts import PROMPT_DIR

ROOT = Path(__file__).resolve().parents[2]
KIND = DirKind("toy artifact", files=("a.json", "parts/[0-9]*/b.bin"), dirs=("parts", "parts/[0-9]*"))


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def _tree(root: Path, *files: str) -> Path:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    root.mkdir(exist_ok=True)
    return root


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_only_known_entries_matched_part_by_part_may_be_replaced(tmp_path):
    check_replaceable(_tree(tmp_path / "ok", "a.json", "parts/0/b.bin", "parts/12/b.bin"), KIND)
    check_replaceable(_tree(tmp_path / "empty"), KIND)
    check_replaceable(tmp_path / "absent", KIND)
    bad = _tree(tmp_path / "bad", "a.json", "parts/0/b.bin", "parts/0/deep/b.bin", "parts/x/b.bin", "parts/1/c.txt")
    with pytest.raises(ArtifactError) as caught:
        check_replaceable(bad, KIND)
    assert str(caught.value) == (f"refusing to replace {bad}: parts/0/deep/, parts/1/c.txt, parts/x/ are not part of "
                                 "a toy artifact; move them away or choose another output directory")


def test_no_kind_allows_only_an_absent_or_empty_directory(tmp_path):
    check_replaceable(_tree(tmp_path / "empty"), None)
    full = _tree(tmp_path / "full", "a.json")
    with pytest.raises(ArtifactError, match=r"it is not empty \(a\.json\)"):
        check_replaceable(full, None)


def test_a_symlink_or_a_file_is_refused(tmp_path):
    real = _tree(tmp_path / "real", "a.json")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    for path in (tmp_path / "link", real / "a.json"):
        with pytest.raises(ArtifactError, match="it exists and is not a directory"):
            check_replaceable(path, KIND)
    assert (real / "a.json").read_bytes() == b"a.json"


def test_prompt_kind_covers_single_prompts_and_ensembles(tmp_path):
    both = _tree(tmp_path / "p", "prompt.json", "prompt.safetensors", "ensemble.json", "members/0/prompt.json",
                 "members/0/prompt.safetensors")
    check_replaceable(both, PROMPT_DIR)
    (both / "members" / "0" / "README.md").write_text("mine")
    with pytest.raises(ArtifactError, match=r"members/0/README\.md is not part of a prompt artifact"):
        check_replaceable(both, PROMPT_DIR)


def test_a_file_put_there_during_the_write_stops_the_swap(tmp_path):
    target = _tree(tmp_path / "t", "a.json")
    with pytest.raises(ArtifactError, match=r"notes\.txt is not part of a toy artifact"):
        with atomic_dir(target, KIND) as tmp:
            (tmp / "a.json").write_text("new")
            (target / "notes.txt").write_text("mine")
    assert sorted(p.name for p in target.iterdir()) == ["a.json", "notes.txt"]
    assert (target / "a.json").read_bytes() == b"a.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]  # the temporary directory is gone


def test_atomic_dir_keeps_the_mode_or_uses_the_umask(tmp_path, umask_022):
    with atomic_dir(tmp_path / "new", KIND) as tmp:
        (tmp / "a.json").write_text("1")
    assert _mode(tmp_path / "new") == 0o755  # not mkdtemp's 0700
    (tmp_path / "new").chmod(0o750)
    with atomic_dir(tmp_path / "new", KIND) as tmp:
        (tmp / "a.json").write_text("2")
    assert _mode(tmp_path / "new") == 0o750 and (tmp_path / "new" / "a.json").read_text() == "2"


def test_atomic_write_keeps_the_mode_or_uses_the_umask(tmp_path, umask_022):
    atomic_write_text(tmp_path / "report.md", "1")
    assert _mode(tmp_path / "report.md") == 0o644  # not mkstemp's 0600
    (tmp_path / "report.md").chmod(0o640)
    atomic_write_text(tmp_path / "report.md", "2")
    assert _mode(tmp_path / "report.md") == 0o640 and (tmp_path / "report.md").read_text() == "2"


def test_every_atomic_dir_writer_names_its_kind():
    """A writer that names no kind may only write an absent or empty directory; the one such writer is the
    built-in model cache (ptune/model/gguf.py), a ptune-owned folder removed beforehand when incomplete."""
    unnamed = []
    for path in sorted((ROOT / "ptune").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "atomic_dir":
                if len(node.args) < 2 and not any(k.arg == "kind" for k in node.keywords):
                    unnamed.append(str(path.relative_to(ROOT)))
    assert unnamed == ["ptune/model/gguf.py"]
