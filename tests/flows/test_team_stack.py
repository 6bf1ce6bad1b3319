"""`make up STACK=team` (flows/stack.py, flows/postgres.py): Prefect and MLflow on one PostgreSQL cluster, on
127.0.0.1, and workers that share nothing with the servers but their URLs.

One stack for the module, started once in a temporary "server" project. Order matters: a worker in another
directory, with its own HOME and only PREFECT_API_URL and MLFLOW_TRACKING_URI, trains, registers (artifacts
uploaded over HTTP) and promotes; a third directory loads `models:/ptune-toy@champion` through the pyfunc and
through `ptune serve`; `down` stops exactly what `up` started (PostgreSQL by pg_ctl) and a second `up` finds the
registry and the flow runs again; then the faults: PostgreSQL stopped in the middle of a registration (nothing
half-registered, the rerun completes), wrong database credentials and an unreachable tracking server (one line
each, no password).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows.processes import running, state_dir, tree
from flows.stack import cluster, team_info
from tests.support import build_project, free_port, project_env_vars

REPO = Path(__file__).resolve().parents[2]


# Not what a worker shares with the servers: how it behaves offline and on a 2-core test machine.
QUIET = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
         "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
         "TOKENIZERS_PARALLELISM": "false", "GX_ANALYTICS_ENABLED": "false", "PTUNE_THREADS": "1",
         "OMP_NUM_THREADS": "1", "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "WARNING",
         "LANG": "C.UTF-8"}


def stack(env: dict[str, str], project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.stack", *args, "--project", str(project)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def stop(pid: int, seconds: float = 30) -> None:
    """SIGTERM a process we started and everything it started; SIGKILL what is left after `seconds`."""
    victims = tree(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for victim in victims:
            try:
                os.kill(victim, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + seconds
        while (left := alive(victims)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not left:
            return


def alive(pids: set[int]) -> set[int]:
    """The pids of `pids` that are still running (zombies count as gone)."""
    found = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            found.add(pid)
    return found


def until(condition, seconds: float, what: str):
    """Poll `condition()` until it returns something true; its value, or a failure naming `what`."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return value


def checkout(root: Path, tiny_causal_dir: Path) -> Path:
    """A machine's own checkout of the project: code, prefect.yaml, params.yaml and data (tests/support.py)."""
    build_project(root, tiny_causal_dir)
    for name in ("flows", "tasks", "ptune"):
        (root / name).symlink_to(REPO / name)
    (root / "prefect.yaml").symlink_to(REPO / "prefect.yaml")
    return root


def bare_env(home: Path, **variables: str) -> dict[str, str]:
    """An environment built from nothing: PATH, its own HOME, the quiet switches and `variables`."""
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home), **QUIET, **variables}


@pytest.fixture(scope="module")
def team(tmp_path_factory, tiny_causal_dir) -> Iterator[dict]:
    """The team stack of a server project (no workers, no deployments there), torn down and its cluster removed."""
    project = checkout(tmp_path_factory.mktemp("team-server"), tiny_causal_dir)
    ports = {"port": free_port(), "mlflow": free_port(), "pg": free_port()}
    env = {**os.environ, **QUIET, "PREFECT_HOME": str(tmp_path_factory.mktemp("team-server-home")),
           "PTUNE_PROJECT_DIR": str(project)}
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PTUNE_DATABASE_URL"):
        env.pop(key, None)
    args = ("up", "--stack", "team", "--port", str(ports["port"]), "--mlflow-port", str(ports["mlflow"]),
            "--pg-port", str(ports["pg"]), "--workers", "0", "--no-deploy", "--mlflow-workers", "1")
    started = stack(env, project, *args)
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield {"env": env, "project": project, "args": args, "up": started, "ports": ports,
               "prefect": f"http://127.0.0.1:{ports['port']}/api", "mlflow": f"http://127.0.0.1:{ports['mlflow']}"}
    finally:
        stack(env, project, "down")
        cluster(project).remove()


@pytest.fixture(scope="module")
def worker(team, tmp_path_factory, tiny_causal_dir) -> Iterator[dict]:
    """A worker machine: its own checkout and HOME, knowing the servers by URL only. It registers the train
    deployment for its checkout (`make deploy` there) and runs `prefect worker start`; stopped by pid."""
    root = checkout(tmp_path_factory.mktemp("team-worker"), tiny_causal_dir)
    env = bare_env(tmp_path_factory.mktemp("team-worker-home"), PREFECT_API_URL=team["prefect"],
                   MLFLOW_TRACKING_URI=team["mlflow"], PTUNE_PROJECT_DIR=str(root), PYTHONPATH=str(root))
    for cmd in ([sys.executable, "-m", "flows.prefect_setup"],
                [str(Path(sys.executable).parent / "prefect"), "--no-prompt", "deploy", "--name", "train"]):
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = open(root / "worker.log", "ab")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", "ptune-process",
                             "--type", "process", "--name", "remote-worker", "--limit", "1"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        yield {"root": root, "env": env, "pid": proc.pid}
    finally:
        stop(proc.pid)
        proc.wait(timeout=30)
        log.close()


def flow_run_state(api: str, run_id) -> object:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def test_up_started_postgres_prefect_and_mlflow_and_printed_no_password(team):
    out = team["up"].stdout
    password = (state_dir(team["project"]) / "pg" / "password").read_text().strip()
    assert set(running(team["project"])) == {"postgres", "server", "mlflow"}
    assert f"PostgreSQL: postgresql://ptune:***@127.0.0.1:{team['ports']['pg']}" in out
    assert f"PREFECT_API_URL={team['prefect']} MLFLOW_TRACKING_URI={team['mlflow']}" in out
    assert password not in out + team["up"].stderr
    assert team_info(team["project"])["mlflow"] == team["mlflow"]
    for pid in set().union(*(tree(pid) for pid in running(team["project"]).values())):  # nor in any command line
        assert password not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")


def test_a_worker_that_knows_only_urls_trains_registers_and_promotes(team, worker):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: team["prefect"]}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("train-task/train")
        assert deployment.job_variables["env"]["PTUNE_PROJECT_DIR"] == str(worker["root"])
        run = client.create_flow_run_from_deployment(deployment.id, parameters={"params": {"task": "toy"}})
    state = until(lambda: (s := flow_run_state(team["prefect"], run.id)).is_final() and s, 900, "the flow run")
    log = (worker["root"] / "worker.log").read_text(errors="replace")[-4000:]
    assert state.is_completed(), f"{state.message}\n{log}"

    mlc = MlflowClient(tracking_uri=team["mlflow"], registry_uri=team["mlflow"])
    champion = mlc.get_model_version_by_alias("ptune-toy", "champion")
    assert champion.version == "1"
    run_info = mlc.get_run(champion.run_id).info
    assert run_info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied by the server, never a worker's path
    served = Path(team_info(team["project"])["artifacts"])
    assert list(served.rglob("prompt.safetensors")), "no prompt reached the server's artifact store"
    assert not (worker["root"] / "mlruns.db").exists() and not (worker["root"] / "mlartifacts").exists()


PREDICT = """
import json, mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/ptune-toy@champion")
print(json.dumps(list(model.predict(pd.DataFrame({"text": ["red fish good 1", "blue sky bad 2"]})))))
"""


def test_a_third_directory_loads_the_champion_over_http_and_predicts(team, tmp_path):
    env = bare_env(tmp_path / "home", MLFLOW_TRACKING_URI=team["mlflow"])
    done = subprocess.run([sys.executable, "-c", PREDICT], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(predictions) == 2 and set(predictions) <= {"good", "bad"}


def test_ptune_serve_in_a_third_directory_answers_predict(team, tmp_path, tiny_causal_dir):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"model": str(tiny_causal_dir)}))  # the base model it holds
    port = free_port()
    env = bare_env(tmp_path / "home", MLFLOW_TRACKING_URI=team["mlflow"])
    with open(tmp_path / "serve.log", "ab") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "ptune"), "serve", "--tasks", "toy", "--port",
                                 str(port), "--poll-seconds", "0"], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        until(healthy, 300, "ptune serve")
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"task": "toy", "inputs": ["red fish good 1"]},
                            timeout=60)
        assert answer.status_code == 200, answer.text
        (prediction,) = answer.json()["predictions"]
        assert prediction["version"] == "1" and prediction["label"] in {"good", "bad"}
    finally:
        stop(proc.pid)
        proc.wait(timeout=30)


def test_down_stops_what_up_started_and_a_second_up_finds_the_registry(team):
    project, env = team["project"], team["env"]
    password = (state_dir(project) / "pg" / "password").read_text()
    processes = set().union(*(tree(pid) for pid in running(project).values()))
    stopped = stack(env, project, "down")
    assert stopped.returncode == 0 and "postgres" in stopped.stdout, stopped.stdout + stopped.stderr
    assert running(project) == {} and cluster(project).pid() is None
    assert alive(processes) == set()

    again = stack(env, project, *team["args"])
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    said = stack(env, project, "status").stdout
    assert f"MLFLOW_TRACKING_URI={team['mlflow']}" in said and "database postgresql://ptune:***@" in said, said
    assert (state_dir(project) / "pg" / "password").read_text() == password  # the same cluster, the same secret
    mlc = MlflowClient(tracking_uri=team["mlflow"], registry_uri=team["mlflow"])
    assert mlc.get_model_version_by_alias("ptune-toy", "champion").version == "1"
    downloaded = Path(mlc.download_artifacts(mlc.get_model_version("ptune-toy", "1").run_id, "prompt",
                                             str(state_dir(project) / "check")))
    assert (downloaded / "prompt.safetensors").exists()
    logs = [p for p in state_dir(project).rglob("*.log")]
    assert logs and not [p for p in logs if password.strip() in p.read_text(errors="replace")]


@pytest.fixture
def fault_project(team, tmp_path, tiny_causal_dir, monkeypatch, prefect_harness) -> Path:
    """A project whose flows run in this process (Prefect's test API) against the team's MLflow server: task
    `toy_db` (its own registered model), MLflow calls bounded to 5 s and no HTTP retries so faults show quickly."""
    root = build_project(tmp_path / "project", tiny_causal_dir)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tasks"]["toy_db"] = dict(params["tasks"]["toy"])
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for key, value in {**project_env_vars(root), "MLFLOW_TRACKING_URI": team["mlflow"],
                       "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PTUNE_MLFLOW_ARTIFACTS", raising=False)
    return root


def test_postgres_stopped_during_registration_leaves_nothing_half_registered_and_the_rerun_completes(
        team, fault_project, monkeypatch):
    from flows.params import TrainFlowParams
    from flows.train import train_task_flow
    from ptune.registry import model_registry, pyfunc_logging

    pg = cluster(team["project"], team["ports"]["pg"])
    upload = pyfunc_logging.log_pyfunc

    def upload_then_lose_the_database(*args, **kwargs):
        model_id = upload(*args, **kwargs)  # the version's artifacts are on the server now, the version not yet
        pg.stop()
        return model_id

    monkeypatch.setattr(pyfunc_logging, "log_pyfunc", upload_then_lose_the_database)
    try:
        state = train_task_flow(TrainFlowParams(task="toy_db"), return_state=True)
        said = stack(team["env"], team["project"], "status").stdout  # the operator's side names the database
    finally:
        pg.start()  # the operator restarts PostgreSQL
    assert state.is_failed()
    message = str(state.message)
    password = (state_dir(team["project"]) / "pg" / "password").read_text().strip()
    assert "MLflow" in message and f"failed (tracking URI {team['mlflow']})" in message, message
    assert "503" in message or "timed out" in message, message  # the server is up, its database is not
    assert f"cannot connect to the database postgresql://ptune:***@127.0.0.1:{team['ports']['pg']}" in said, said
    assert password not in message + said

    monkeypatch.setattr(pyfunc_logging, "log_pyfunc", upload)
    mlc = MlflowClient(tracking_uri=team["mlflow"], registry_uri=team["mlflow"])
    assert mlc.search_model_versions("name='ptune-toy_db'") == []  # no version without its artifacts
    assert model_registry.alias_version("toy_db", "champion") is None  # no alias on anything

    state = train_task_flow(TrainFlowParams(task="toy_db"), return_state=True)
    assert state.is_completed(), state.message
    assert model_registry.alias_version("toy_db", "champion").version == "1"
    model_registry.download_prompt("toy_db", fault_project / "pulled")  # its artifacts, checked against its hashes


def test_wrong_database_credentials_fail_in_one_line_without_the_password(team, tmp_path):
    project = tmp_path / "other"
    env = {**team["env"], "PTUNE_PROJECT_DIR": str(project),
           "PTUNE_DATABASE_URL": f"postgresql://ptune:not-the-secret@127.0.0.1:{team['ports']['pg']}"}
    done = stack(env, project, "up", "--stack", "team", "--port", str(free_port()), "--mlflow-port", str(free_port()),
                 "--workers", "0", "--no-deploy")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot connect to the database postgresql://ptune:***@127.0.0.1:{team['ports']['pg']}")
    assert "password authentication failed" in line and "not-the-secret" not in done.stdout + done.stderr
    assert running(project) == {}  # nothing was started


def test_an_unreachable_tracking_server_fails_in_one_line_naming_it(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = bare_env(tmp_path / "home", MLFLOW_TRACKING_URI=url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    done = subprocess.run([str(Path(sys.executable).parent / "ptune"), "pull", "toy", "--out", str(tmp_path / "p")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"(tracking URI {url})" in errors[0], done.stderr[-2000:]


def test_make_up_passes_the_stack_to_flows_stack():
    def dry(*args: str) -> str:
        return subprocess.run(["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=60).stdout

    team = dry("up", "STACK=team", "PG_PORT=6543")
    assert "flows.stack up --stack team" in team and "--pg-port 6543" in team and "--mlflow-port" in team
    assert "--stack local" in dry("up") and "flows.stack down" in dry("down")
