"""The committed record of the default pipeline (`make repro` on `run_tasks`): dvc.lock, metrics/<task>.json
and the PNG plots are in git, agree with each other, and DVC's own readers work on a fresh clone of HEAD
(`dvc metrics show`, `dvc metrics diff`, `dvc plots diff`, `dvc exp show`) without any cached data."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).with_name("dvc"))
DEFAULT_TASKS = yaml.safe_load((REPO / "params.yaml").read_text())["run_tasks"]
# Tasks whose `make repro` record is not committed yet: the 2026-12-06 record stopped at boolq_offline's
# report (a formatter bug, since fixed). test_every_default_task_is_recorded fails once it is no longer true,
# so this list must shrink to () with the next committed record.
NOT_YET_RECORDED = ("boolq_offline",)
RUN_TASKS = [task for task in DEFAULT_TASKS if task not in NOT_YET_RECORDED]

pytestmark = pytest.mark.skipif(not (REPO / ".git").exists() or shutil.which("git") is None,
                                reason="needs the git checkout")


def dvc(cwd: Path, *args: str) -> str:
    done = subprocess.run([DVC, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"dvc {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of HEAD: what a new user has before `dvc pull` or any run."""
    target = tmp_path_factory.mktemp("record") / "ptune"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(target)], check=True, timeout=300)
    return target


def _lock_outs(clone: Path) -> dict[str, str]:
    """path -> md5 of every stage output recorded in the committed dvc.lock."""
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    return {out["path"]: out.get("md5", "") for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_the_lock_records_every_run_task_and_git_holds_what_it_says_is_not_cached(clone):
    outs = _lock_outs(clone)
    for task in RUN_TASKS:
        for path in (f"metrics/{task}.json", f"outputs/{task}/report/tuned_vs_baseline.png",
                     f"outputs/{task}/train_curve.png", f"outputs/{task}/train_curve.csv"):
            assert path in outs, f"dvc.lock has no {path}: run `make repro` and commit its record"
            assert (clone / path).is_file(), f"{path} (cache: false) is not committed"
            digest = hashlib.md5((clone / path).read_bytes()).hexdigest()
            assert digest == outs[path], f"{path} differs from what the recorded run wrote"


def test_metrics_show_and_diff_on_a_fresh_clone(clone):
    shown = json.loads(dvc(clone, "metrics", "show", "--json"))
    data = shown[""]["data"] if "" in shown else next(iter(shown.values()))["data"]
    for task in RUN_TASKS:
        metrics = data[f"metrics/{task}.json"]["data"]
        assert any(key.startswith("test/") for key in metrics), metrics
    assert json.loads(dvc(clone, "metrics", "diff", "--json") or "{}") == {}  # the workspace is HEAD


def test_plots_diff_and_exp_show_on_a_fresh_clone(clone):
    plots = json.loads(dvc(clone, "plots", "diff", "HEAD", "--json"))["data"]  # workspace vs the commit
    for task in RUN_TASKS:
        for path in (f"outputs/{task}/report/tuned_vs_baseline.png", f"outputs/{task}/train_curve.png"):
            shown = plots.get(path, [])
            assert {r["type"] for r in shown} == {"image"}, (path, sorted(plots))
            assert {rev for r in shown for rev in r["revisions"]} == {"workspace", "HEAD"}, shown
            assert all(Path(r["url"]).is_file() for r in shown), shown  # rendered from git, not a cache
    rows = json.loads(dvc(clone, "exp", "show", "--json"))
    assert rows and rows[0]["rev"] == "workspace"
    metrics = rows[0]["data"]["metrics"]
    assert all(f"metrics/{task}.json" in metrics for task in RUN_TASKS), sorted(metrics)


@pytest.mark.xfail(strict=True, reason=f"make repro record not committed yet for {NOT_YET_RECORDED}")
def test_every_default_task_is_recorded(clone):
    recorded = {out["path"] for stage in yaml.safe_load((clone / "dvc.lock").read_text())["stages"].values()
                for out in stage.get("outs", [])}
    assert all(f"metrics/{task}.json" in recorded for task in DEFAULT_TASKS)
