"""`dvc repro` of the data stages in a temporary git+dvc clone of a tiny fixture project; a second run is a no-op."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture
def fixture_project(tmp_path) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "proj"
    project.mkdir()
    rows = [{"text": f"sample number {i}", "label": i % 2} for i in range(100)]
    (project / "inputs").mkdir()
    (project / "inputs/toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {"path": "inputs/toy.jsonl", "template": "Text: {text}\nLabel:", "target_field": "label",
            "label_words": ["even", "odd"], "label_map": {0: "even", 1: "odd"}}
    params = {"model": "smollm2-135m", "run_tasks": ["toy"], "tasks": {"toy": task},
              "data": {"seed": 0, "max_train": 50, "max_validation": 10, "max_test": 20, "min_class_share": 0.05}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    data_stages = {k: v for k, v in dvc["stages"].items() if k in ("fetch", "prepare", "validate")}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": data_stages}, sort_keys=False))
    shutil.copytree(REPO / "ptune", project / "ptune", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(project),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("PTUNE_PROJECT_DIR", None)
    _run(["git", "init", "-q"], project, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], project, env)
    _run(["git", "add", "-A"], project, env)
    _run(["git", "commit", "-qm", "fixture"], project, env)
    return project, env


def test_dvc_repro_runs_data_stages_then_is_up_to_date(fixture_project) -> None:
    project, env = fixture_project
    first = _run([sys.executable, "-m", "dvc", "repro"], project, env)
    for stage in ("fetch@toy", "prepare@toy", "validate@toy"):
        assert f"Running stage '{stage}'" in first, first
    counts = json.loads((project / "data/prepared/toy/data_version.json").read_text())["counts"]
    assert counts == {"train": 50, "validation": 10, "test": 20}
    assert json.loads((project / "data/validation/toy/summary.json").read_text())["success"] is True
    second = _run([sys.executable, "-m", "dvc", "repro"], project, env)
    assert "Running stage" not in second and "up to date" in second, second
