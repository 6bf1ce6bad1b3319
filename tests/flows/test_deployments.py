"""prefect.yaml against a real `prefect server` on 127.0.0.1: create the pool and GPU limit, deploy every flow,
start a `process` worker, and run a deployment the way the UI's Run form does (POST with parameters).

Server and worker are started and stopped by PID (worker first); PREFECT_HOME is a temp dir. The project dir
links flows/ and tasks/ from the repository, as a real checkout has them next to params.yaml and data/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.support import build_project, free_port

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))



def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process we started (by its PID), SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict[str, str]]:
    home, port = tmp_path_factory.mktemp("prefect-server-home"), free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
           "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}  # flow-run processes import this checkout's ptune, whatever is installed
    log = (home / "server.log").open("w")
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (home / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield env
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="module")
def deployed(server, tmp_path_factory, tiny_causal_dir) -> Iterator[dict[str, str]]:
    """`make deploy`'s two commands, then a worker on the pool (stopped before the server)."""
    project = build_project(tmp_path_factory.mktemp("deployed-project"), tiny_causal_dir)
    with (project / "params.yaml").open("a") as fh:  # the toy task's own recipe differs from the global one
        fh.write("task_overrides:\n  toy:\n    train: {lr: 0.05, n_tokens: 3}\n")
    for name in ("flows", "tasks"):
        (project / name).symlink_to(REPO / name)
    env = {**server, "PTUNE_PROJECT_DIR": str(project), "PTUNE_TZ": "Europe/Paris"}
    setup = subprocess.run([sys.executable, "-m", "flows.prefect_setup"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120)
    assert setup.returncode == 0 and "'ptune-process': created" in setup.stdout, setup.stdout + setup.stderr
    deploy = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    log = (project / "worker.log").open("w")
    worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "ptune-process", "--type", "process"],
                              cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield env
    finally:
        stop(worker)
        log.close()


def test_deployments_schedule_and_forms(deployed):
    with temporary_settings({PREFECT_API_URL: deployed["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("nightly/nightly")
        train = client.read_deployment_by_name("train-task/train")
        reference = client.read_deployment_by_name("reference/reference")
        assert {d.name for d in client.read_deployments()} == {"nightly", "train", "validate", "promote", "sweep",
                                                                "reference"}
        assert client.read_global_concurrency_limit_by_name("ptune-gpu").limit == 1
    schedule = nightly.schedules[0].schedule
    assert (schedule.cron, schedule.timezone) == ("0 2 * * *", "Europe/Paris")
    assert nightly.work_pool_name == "ptune-process"
    assert nightly.global_concurrency_limit.limit == 1  # one nightly at a time (issue 13)
    assert nightly.concurrency_options.collision_strategy == "CANCEL_NEW"
    assert nightly.job_variables["env"]["PTUNE_PROJECT_DIR"] == deployed["PTUNE_PROJECT_DIR"]
    form = str(train.parameter_openapi_schema)
    assert "TrainFlowParams" in form and "Training steps" in form and "'adafactor', 'adamw'" in form
    task = train.parameter_openapi_schema["definitions"]["TrainFlowParams"]["properties"]["task"]
    assert {"toy", "toy_bad", "rotten_tomatoes"} <= set(task["enum"])  # the catalog + the project's user tasks
    steps = train.parameter_openapi_schema["definitions"]["TrainOverrides"]["properties"]["max_steps"]
    assert "default" not in steps and "params.yaml's global value: 6" in steps["description"]  # shown, not pre-filled
    ref_form = reference.parameter_openapi_schema["definitions"]["ReferenceParams"]["properties"]
    assert ref_form["method"]["enum"] == ["lora", "full", "multitask"] and "toy" in ref_form["task"]["enum"]
    assert reference.work_pool_name == "ptune-process" and "reference" in reference.tags


def test_run_a_deployment_with_form_parameters(deployed):
    with temporary_settings({PREFECT_API_URL: deployed["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("validate/validate")
        with pytest.raises(Exception, match="422|409|[Vv]alidation"):  # the form's pattern is enforced server-side
            client.create_flow_run_from_deployment(deployment.id, parameters={"params": {"task": "Not A Task"}})
        run = client.create_flow_run_from_deployment(deployment.id, parameters={"params": {"task": "toy"}})
        deadline = time.monotonic() + 240
        while not (run := client.read_flow_run(run.id)).state.is_final():
            assert time.monotonic() < deadline, f"flow run still {run.state.name}"
            time.sleep(1)
    project = Path(deployed["PTUNE_PROJECT_DIR"])
    assert run.state.is_completed(), run.state.message + (project / "worker.log").read_text()[-3000:]
    assert (project / "data" / "validation" / "toy" / "report.md").exists()  # ran in the project dir


def _ui_payload(schema: dict, definition: str) -> dict:
    """What the UI's Run form submits untouched: every property's JSON-schema default, nested objects included."""
    props = schema["definitions"][definition]["properties"]
    payload = {name: field["default"] for name, field in props.items() if "default" in field}
    for name, field in props.items():
        ref = field.get("$ref") or next((a["$ref"] for a in field.get("allOf", []) if "$ref" in a), None)
        if ref:
            payload[name] = _ui_payload(schema, ref.rsplit("/", 1)[-1])
    return payload


def test_a_form_run_trains_the_tasks_own_recipe(deployed):
    """A UI run of `toy` where only max_steps was typed: the flow run's parameters, read back from the API, give
    the task's own lr and prompt length (task_overrides), not the global params.yaml values."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import Scheduled

    from flows.common import task_run
    from flows.params import TrainFlowParams
    from tests.support import project_env

    with temporary_settings({PREFECT_API_URL: deployed["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("train-task/train")
        form = _ui_payload(deployment.parameter_openapi_schema, "TrainFlowParams")
        form.update(task="toy", train={**form.get("train", {}), "max_steps": 3})  # the one field the user typed
        later = Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=365))  # no worker picks it up
        run = client.create_flow_run_from_deployment(deployment.id, parameters={"params": form}, state=later)
        try:
            submitted = client.read_flow_run(run.id).parameters["params"]
        finally:
            client.delete_flow_run(run.id)
    assert run.state.type == StateType.SCHEDULED
    with project_env(Path(deployed["PTUNE_PROJECT_DIR"])):
        params = task_run(TrainFlowParams(**submitted), "toy").params
    assert (params.train.max_steps, params.train.lr, params.train.n_tokens) == (3, 0.05, 3)
