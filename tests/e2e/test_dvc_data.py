"""`dvc repro` of the data stages in a temporary git+dvc clone of a tiny fixture project: a second run is a
no-op; editing the user task's data file reruns it without -f; a stale task_inputs.yaml is refused; `ptune repro`
waits for a lock that a plain `dvc repro` holds."""

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
              "data": {"seed": 0, "max_train": 50, "max_validation": 10, "max_test": 20, "min_class_share": 0.05,
                       "max_dropped_share": 0.5}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    data_stages = {k: v for k, v in dvc["stages"].items() if k in ("fetch", "prepare", "validate")}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"vars": dvc["vars"], "stages": data_stages}, sort_keys=False))
    shutil.copytree(REPO / "ptune", project / "ptune", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(project),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("PTUNE_PROJECT_DIR", None)
    _run(["git", "init", "-q"], project, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], project, env)
    _run([sys.executable, "-m", "ptune.cli", "dvc-inputs"], project, env)
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


def _dvc(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)


def test_editing_the_user_task_file_reruns_fetch_without_force(fixture_project) -> None:
    project, env = fixture_project
    _run([sys.executable, "-m", "dvc", "repro"], project, env)
    with (project / "inputs/toy.jsonl").open("a") as fh:
        fh.write(json.dumps({"text": "one more sample", "label": 1}) + "\n")
    status = _dvc(project, env, "status", "fetch@toy").stdout
    assert "modified:           inputs/toy.jsonl" in status, status
    again = _run([sys.executable, "-m", "dvc", "repro"], project, env)
    assert "Running stage 'fetch@toy'" in again and "Running stage 'prepare@toy'" in again, again
    assert len((project / "data/raw/toy.jsonl").read_text().splitlines()) == 101


def test_a_stale_task_inputs_file_is_refused(fixture_project) -> None:
    project, env = fixture_project
    (project / "inputs/toy.jsonl").rename(project / "inputs/toy2.jsonl")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tasks"]["toy"]["path"] = "inputs/toy2.jsonl"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / "inputs/toy.jsonl").write_text("")  # the old dep still exists, so DVC reaches our check
    proc = _dvc(project, env, "repro")
    assert proc.returncode != 0
    assert (f"error: {project / 'task_inputs.yaml'} is stale for task 'toy': it records "
            "{'data': 'inputs/toy.jsonl', 'spec': 'inputs/toy.jsonl'}, params.yaml needs "
            "{'data': 'inputs/toy2.jsonl', 'spec': 'inputs/toy2.jsonl'} (so DVC would miss edits to your data); "
            "run `ptune dvc-inputs` (or `ptune repro`, which refreshes it) and repeat") in proc.stdout + proc.stderr
    repro = subprocess.run([sys.executable, "-m", "ptune.cli", "repro"], cwd=project, env=env, capture_output=True,
                           text=True, timeout=300)
    assert repro.returncode == 0, repro.stdout + repro.stderr
    assert "inputs/toy2.jsonl" in (project / "task_inputs.yaml").read_text()


HOLD_DVC_LOCK = """
import sys, time
from dvc.repo import Repo
with Repo(".").lock:
    print("locked", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def test_ptune_repro_waits_for_a_lock_that_dvc_holds(fixture_project) -> None:
    project, env = fixture_project
    holder = subprocess.Popen([sys.executable, "-c", HOLD_DVC_LOCK, "30"], cwd=project, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        plain = _dvc(project, env, "repro")
        assert plain.returncode != 0 and "Unable to acquire lock" in plain.stderr + plain.stdout
        waited = subprocess.run([sys.executable, "-m", "ptune.cli", "repro"], cwd=project, env=env,
                                capture_output=True, text=True, timeout=300)
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert "Running stage 'fetch@toy'" in waited.stdout + waited.stderr
    finally:
        holder.wait(timeout=60)
