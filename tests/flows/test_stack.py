"""`make up` / `make down` (flows/stack.py) on a toy project against a real `prefect server` on 127.0.0.1, and what
needs the server's event services: the `ptune.data.changed` trigger and the nightly-failure notification.

Order matters (one stack for the module, started once): up, up again (no-op), a run through the API that emits
the data event and triggers exactly one training (an unchanged version: none, fenced by a second task's
event), a failing nightly that reaches a loopback webhook, then down, after which no process of the stack is
left.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterName,
)
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.processes import running, state_dir, tree
from tests.support import build_project, free_port, project_env_vars

REPO = Path(__file__).resolve().parents[2]


class Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Hook.received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.stack", *args, "--project", env["PTUNE_PROJECT_DIR"]],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def up(tmp_path_factory, tiny_causal_dir) -> Iterator[dict[str, str]]:
    project = build_project(tmp_path_factory.mktemp("stack-project"), tiny_causal_dir)
    for name in ("flows", "tasks"):
        (project / name).symlink_to(REPO / name)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tasks"]["toy2"] = {**params["tasks"]["toy"], "path": "data/toy.jsonl"}  # a second trainable task
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    hook = ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    port = free_port()
    env = {**os.environ, **project_env_vars(project), "PREFECT_HOME": str(tmp_path_factory.mktemp("stack-home")),
           "PTUNE_ALERT_WEBHOOK": f"http://127.0.0.1:{hook.server_port}/alert", "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_LOGGING_LEVEL": "WARNING", "OMP_NUM_THREADS": "1", "PTUNE_TZ": "UTC",
           "PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL": "INFO",  # keeps "Worker '…' submitting flow run"
           "PYTHONPATH": str(REPO)}  # flow-run processes import this checkout's ptune, whatever is installed
    env.pop("PREFECT_API_URL", None)
    started = stack(env, "up", "--port", str(port), "--workers", "2")
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        assert f"Prefect UI: http://127.0.0.1:{port}" in started.stdout
        yield {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "UP_PIDS": json.dumps(running(project))}
    finally:
        stack(env, "down")
        hook.shutdown()


def _wait(client, run_id, seconds: float = 300):
    deadline = time.monotonic() + seconds
    while not (run := client.read_flow_run(run_id)).state.is_final():
        assert time.monotonic() < deadline, f"flow run still {run.state.name}"
        time.sleep(1)
    return run


def _train_runs(client) -> list:
    train = client.read_deployment_by_name("train-task/train")
    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[train.id])))


def _trained_tasks(client) -> list[str]:
    return sorted(r.parameters["params"]["task"] for r in _train_runs(client))


def test_up_started_server_and_two_workers_and_a_second_up_is_a_no_op(up):
    pids = json.loads(up["UP_PIDS"])
    assert set(pids) == {"server", "worker-1", "worker-2"}
    again = stack(up, "up", "--port", str(free_port()))
    assert again.returncode == 0 and "already up" in again.stdout
    assert running(Path(up["PTUNE_PROJECT_DIR"])) == pids


def test_new_data_triggers_exactly_one_training_and_unchanged_data_none(up):
    with temporary_settings({PREFECT_API_URL: up["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        validate = client.read_deployment_by_name("validate/validate")
        params = {"params": {"task": "toy"}}
        first = _wait(client, client.create_flow_run_from_deployment(validate.id, parameters=params).id)
        assert first.state.is_completed(), first.state.message
        deadline = time.monotonic() + 90
        while not (runs := _train_runs(client)) and time.monotonic() < deadline:
            time.sleep(1)
        assert len(runs) == 1 and runs[0].parameters["params"]["task"] == "toy"
        second = _wait(client, client.create_flow_run_from_deployment(validate.id, parameters=params).id)
        assert second.state.is_completed(), second.state.message
        # A fence instead of a pause: toy2's data is new, so its validate emits an event after any the second toy
        # run could have emitted, and the server's trigger service handles events in the order it receives
        # them. Once toy2's training exists, a training for toy's unchanged data would exist too.
        fence = _wait(client, client.create_flow_run_from_deployment(
            validate.id, parameters={"params": {"task": "toy2"}}).id)
        assert fence.state.is_completed(), fence.state.message
        deadline = time.monotonic() + 90
        while "toy2" not in (tasks := _trained_tasks(client)) and time.monotonic() < deadline:
            time.sleep(1)
        assert tasks == ["toy", "toy2"]


def test_a_failed_nightly_notifies_the_webhook(up):
    with temporary_settings({PREFECT_API_URL: up["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("nightly/nightly")
        run = client.create_flow_run_from_deployment(nightly.id, parameters={"params": {"tasks": ["toy_bad"]}})
        assert _wait(client, run.id).state.is_failed()
        deadline = time.monotonic() + 60
        while not Hook.received and time.monotonic() < deadline:
            time.sleep(1)
    assert Hook.received, "no notification reached the loopback webhook"
    alert = Hook.received[0]
    assert "nightly" in alert["subject"] and "Failed" in alert["subject"]
    assert "1 of 1 tasks failed: toy_bad" in alert["body"]


def _workers_of(client, run_ids: list, seconds: float = 60) -> dict:
    """flow-run id -> name of the worker that submitted it, from the worker's own run log line."""
    pattern = re.compile(r"Worker '([^']+)' submitting flow run '([0-9a-f-]+)'")
    deadline = time.monotonic() + seconds  # workers ship their logs to the API in batches
    while True:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)))
        found = {m.group(2): m.group(1) for log in logs if (m := pattern.search(log.message))}
        if len(found) == len(run_ids) or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_a_fanned_out_nightly_runs_tasks_as_deployment_runs_one_training_per_slot(up):
    with temporary_settings({PREFECT_API_URL: up["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        before = {r.id for r in _train_runs(client)}
        nightly = client.read_deployment_by_name("nightly/nightly")
        form = {"tasks": ["toy", "toy2"], "fan_out": True, "retrain_unchanged": True}
        run = _wait(client, client.create_flow_run_from_deployment(nightly.id, parameters={"params": form}).id, 600)
        assert run.state.is_completed(), run.state.message
        trains = [r for r in _train_runs(client) if r.id not in before]
        assert sorted(r.parameters["params"]["task"] for r in trains) == ["toy", "toy2"]
        assert all(r.state.is_completed() for r in trains)
        spans = sorted((t.start_time, t.end_time) for t in client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in trains])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="train_prompt"))) if t.state.is_completed())
        assert len(spans) == 2 and spans[0][1] <= spans[1][0], spans  # ptune-gpu limit 1: never two at once
        workers = _workers_of(client, [run.id, *(r.id for r in trains)])
    assert len(workers) == 3, workers
    # every run went to a worker of the pool; which of the two polls first is a race (one once took all 3 runs)
    assert set(workers.values()) <= {"ptune-worker-1", "ptune-worker-2"}, workers


def test_down_stops_everything_it_started(up):
    project = Path(up["PTUNE_PROJECT_DIR"])
    started = json.loads(up["UP_PIDS"])
    processes = set().union(*(tree(pid) for pid in started.values()))
    assert len(processes) >= 3
    stopped = stack(up, "down")
    assert stopped.returncode == 0 and "server" in stopped.stdout
    assert running(project) == {} and not list(state_dir(project).glob("*.pid"))
    left = [pid for pid in processes if Path(f"/proc/{pid}").exists()
            and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert left == [], left
    assert "nothing was running" in stack(up, "down").stdout  # a second down is a no-op


def test_down_never_signals_a_pid_that_now_belongs_to_another_process(tmp_path):
    from flows.stack import down

    folder = state_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "server.pid").write_text(f"{os.getpid()} 1\n")  # our own pid, with another start time
    assert running(tmp_path) == {}
    assert down(tmp_path) == [] and not (folder / "server.pid").exists()  # and this test process is alive
