"""A training run never stays RUNNING for good: SIGTERM / Ctrl-C mark it KILLED (real `ptune train` process,
real SQLite MLflow store), and the next training of the task ends the runs whose process is gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from ptune.config import load_params
from ptune.pipeline import stages
from ptune.registry import run_status, tracking
from tests.support import build_project, project_env, project_env_vars

DEADLINE_S = 300  # a cold start on two busy cores: torch, transformers and MLflow imports, the model, the run


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_causal_dir):
    """The toy project with its data prepared; ptune and MLflow point at it for the module."""
    root = build_project(tmp_path_factory.mktemp("project"), tiny_causal_dir)
    with project_env(root):
        run = stages.TaskRun.build("toy", load_params(root / "params.yaml"))
        stages.fetch(run)
        stages.prepare(run)
        yield root


def toy_runs(project: Path) -> list:
    mlc = MlflowClient(tracking.tracking_uri())
    return mlc.search_runs([mlc.get_experiment_by_name("ptune/toy").experiment_id], max_results=1000)


def wait_for(what: str, check, proc: subprocess.Popen, log: Path):
    """Poll `check()` until it returns something truthy; fail with the log if the process ends or time runs out."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"ptune train exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {DEADLINE_S} s:\n{log.read_text()[-3000:]}")


def default_signals() -> None:  # in the child: a SIGINT ignored by our own parent (a background job) is not inherited
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_training_ends_its_mlflow_run_killed(project, tmp_path, sig):
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "ptune.cli", "train", "toy", "--track", "--steps", "100000",
           "--out", str(tmp_path / "out"), "--params", str(project / "params.yaml")]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=project, env={**os.environ, **project_env_vars(project)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=default_signals)
    try:
        wait_for("progress line", lambda: "train toy: step 1/100000" in log.read_text(), proc, log)
        mine = wait_for("RUNNING run", lambda: [r for r in toy_runs(project)
                                                if r.data.tags.get(run_status.PID_TAG) == str(proc.pid)], proc, log)
        assert mine[0].info.status == "RUNNING"
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 128 + sig, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ended = MlflowClient(tracking.tracking_uri()).get_run(mine[0].info.run_id)
    assert ended.info.status == "KILLED", log.read_text()[-3000:]
    assert ended.data.tags[run_status.END_REASON_TAG] == sig.name


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_training_of_the_task_ends_runs_whose_process_is_gone(project, tmp_path):
    mlc, here, now = MlflowClient(tracking.tracking_uri()), socket.gethostname(), time.time()
    experiment = tracking.ensure_experiment("toy")
    days_ago = int((now - 4 * 86400) * 1000)

    def running(start_time: int | None = None, **tags: str) -> str:
        return mlc.create_run(experiment, start_time=start_time, tags={"ptune.task": "toy", **tags}).info.run_id

    dead = running(**{run_status.HOST_TAG: here, run_status.PID_TAG: str(dead_pid())})
    alive = running(**{run_status.HOST_TAG: here, run_status.PID_TAG: str(os.getpid())})
    foreign_old = running(days_ago, **{run_status.HOST_TAG: "elsewhere", run_status.PID_TAG: "1"})
    foreign_new = running(**{run_status.HOST_TAG: "elsewhere", run_status.PID_TAG: "1"})
    untagged_old = running(days_ago)

    run = stages.TaskRun.build("toy", load_params(project / "params.yaml"), run_dir=tmp_path / "run",
                               train={"max_steps": 2})
    trained = stages.train(run, stages.load_base(run), track=True)

    status = {rid: mlc.get_run(rid) for rid in (dead, alive, foreign_old, foreign_new, untagged_old)}
    assert {rid: r.info.status for rid, r in status.items()} == {
        dead: "KILLED", alive: "RUNNING", foreign_old: "KILLED", foreign_new: "RUNNING", untagged_old: "KILLED"}
    assert "is gone" in status[dead].data.tags[run_status.END_REASON_TAG]
    assert "on host elsewhere" in status[foreign_old].data.tags[run_status.END_REASON_TAG]
    assert "no process record" in status[untagged_old].data.tags[run_status.END_REASON_TAG]
    new = mlc.get_run(trained.run_id)
    assert new.info.status == "RUNNING" and new.data.tags[run_status.PID_TAG] == str(os.getpid())
    assert new.data.tags[run_status.HOST_TAG] == here
    for rid in (alive, foreign_new, trained.run_id):
        mlc.set_terminated(rid, "FINISHED")


def test_a_pid_now_held_by_a_younger_process_is_not_the_runs_process():
    started_before_us = psutil.Process().create_time() - 60  # the run began before this process did: pid reused
    tags = {run_status.HOST_TAG: socket.gethostname(), run_status.PID_TAG: str(os.getpid())}
    assert "is gone" in run_status.stale_reason(tags, started_before_us, time.time())
    assert run_status.stale_reason(tags, time.time(), time.time()) is None
