"""The manual and the docs site: README.md is a manual (at most 300 lines, links that resolve, no tracker
numbers or commit hashes), and `mkdocs build --strict` passes, so a broken link or a page missing from the
navigation fails the suite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_readme_is_a_short_manual_whose_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    local = [m.group(1) for m in LINK.finditer(text) if not m.group(1).startswith(("http://", "https://"))]
    assert local, "the README links its docs"
    assert [link for link in local if not (ROOT / link).exists()] == []
    assert not re.search(r"\bissue \d+|#\d{2,}\b", text), "no tracker numbers in the manual"
    assert not re.search(r"\b(commit|of) [0-9a-f]{7,40}\b", text), "no commit hashes in the manual"
    assert "../" not in text, "no paths outside the repository"


def test_mkdocs_build_strict(tmp_path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "data" / "index.html").exists()
