"""`make up` / `make down`: the local Prefect stack in the background, one command each.

`up` starts `prefect server` (127.0.0.1), waits until its API answers, creates the pool, limits, alert and
deployments (`flows.prefect_setup` + `prefect deploy --all`), then starts the workers (and, with `--mlflow`,
the MLflow UI). Each process gets a pid file and a log under `.ptune/stack/` of the project. A second `up`
finds the pid files of live processes and does nothing; `down` stops exactly those processes (workers
first, then the server), each with its whole process group, and removes their pid files.

A pid file holds "<pid> <start time>" (field 22 of /proc/<pid>/stat): `down` never signals a process that
merely reuses a recorded pid.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUIET = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
         "PREFECT_LOGGING_EXTRA_LOGGERS": "ptune", "PREFECT_RESULTS_DEFAULT_SERIALIZER": "json"}


def state_dir(project: Path) -> Path:
    return project / ".ptune" / "stack"


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def running(project: Path) -> dict[str, int]:
    """Name -> pid of the stack's processes that are alive and are the ones we started."""
    alive = {}
    for pid_file in sorted(state_dir(project).glob("*.pid")):
        pid, started = pid_file.read_text().split()
        if _start_time(int(pid)) == started:
            alive[pid_file.stem] = int(pid)
    return alive


def _spawn(project: Path, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> int:
    """Start `cmd` in its own session (process group) with stdout+stderr in .ptune/stack/<name>.log."""
    folder = state_dir(project)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    (folder / f"{name}.pid").write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
    return proc.pid


def wait_healthy(url: str, pid: int, log: Path, timeout: float = 120) -> None:
    """Poll `<url>/health` until it answers 200; fail with the log's tail if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if _start_time(pid) is None:
            break
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise SystemExit(f"the Prefect server did not answer at {url} (log {log}):\n{tail}")


def stack_env(project: Path, port: int, mlflow_port: int | None = None) -> dict[str, str]:
    """The environment of the server and the workers; with `mlflow_port`, the workers' summary artifacts link
    (and draw their chart from) the MLflow UI that `make up MLFLOW=1 MLFLOW_PORT=...` starts."""
    api = f"http://127.0.0.1:{port}/api"
    ui = {"PTUNE_MLFLOW_UI": f"http://127.0.0.1:{mlflow_port}"} if mlflow_port else {}
    return {**QUIET, **os.environ, "PREFECT_API_URL": api, "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port), "PREFECT_UI_API_URL": api, "PTUNE_PROJECT_DIR": str(project),
            "PTUNE_TZ": os.environ.get("PTUNE_TZ", "UTC"), **ui}


def deploy(env: dict[str, str]) -> None:
    """`make deploy`: pool, limits and alert (flows.prefect_setup), then every deployment of prefect.yaml."""
    for cmd in ([sys.executable, "-m", "flows.prefect_setup"], [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"]):
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[-3:])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        lines = done.stdout.strip().splitlines()
        print(lines[-1] if cmd[-1] == "flows.prefect_setup" and lines else f"{' '.join(cmd[-3:])}: done")


def up(project: Path, port: int, workers: int = 2, mlflow_port: int | None = None,
       worker_limit: int = 2) -> dict[str, int]:
    """Start what is not running yet; returns name -> pid of the stack. A running stack is left as it is.

    Each worker runs at most `worker_limit` flow runs at once (`prefect worker start --limit`). With the default 2,
    a fanned-out nightly (one parent flow run waiting on one deployment run per task) never has a worker take
    every child itself: the children spread over the workers, and the `ptune-gpu` limit still allows one training
    per slot whichever worker runs it.
    """
    project = project.resolve()
    if running(project):
        print(f"already up: {running(project)} (logs in {state_dir(project)}); `make down` stops it")
        return running(project)
    env = stack_env(project, port, mlflow_port)
    prefect = str(BIN / "prefect")
    pid = _spawn(project, "server", [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                 env, project)
    wait_healthy(env["PREFECT_API_URL"], pid, state_dir(project) / "server.log")
    deploy(env)
    for i in range(1, workers + 1):
        _spawn(project, f"worker-{i}", [prefect, "worker", "start", "--pool", "ptune-process", "--type", "process",
                                        "--name", f"ptune-worker-{i}", "--limit", str(worker_limit)], env, project)
    if mlflow_port:
        _spawn(project, "mlflow", [str(BIN / "mlflow"), "server", "--backend-store-uri", "sqlite:///mlruns.db",
                                   "--artifacts-destination", "./mlartifacts", "--host", "127.0.0.1",
                                   "--port", str(mlflow_port)],
               {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, project)
        print(f"MLflow UI:  http://127.0.0.1:{mlflow_port}")
    print(f"Prefect UI: http://127.0.0.1:{port}   (API {env['PREFECT_API_URL']}; logs in {state_dir(project)})")
    return running(project)


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) of every process."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return found


def tree(pid: int) -> set[int]:
    """`pid`, its process group and all their descendants (flow-run processes may start their own session)."""
    procs = _procs()
    found = {p for p, (_, pgid, _) in procs.items() if pgid == pid} | ({pid} if pid in procs else set())
    grew = True
    while grew:
        more = {p for p, (ppid, _, _) in procs.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found


def _alive(pids: set[int]) -> set[int]:
    procs = _procs()
    return {p for p in pids if p in procs and procs[p][2] != "Z"}


def _stop(pid: int, timeout: float) -> None:
    """SIGTERM the process we started and everything it started, SIGKILL what is left after `timeout`."""
    victims = tree(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for victim in _alive(victims):
            try:
                os.kill(victim, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while _alive(victims) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _alive(victims):
            return


def down(project: Path, timeout: float = 20) -> list[str]:
    """Stop the processes `up` started (workers and MLflow before the server); returns their names."""
    project = project.resolve()
    alive = running(project)
    order = sorted(alive, key=lambda name: name == "server")  # the server last
    for name in order:
        _stop(alive[name], timeout)
    for pid_file in state_dir(project).glob("*.pid"):
        pid_file.unlink()
    print(f"stopped: {', '.join(order) or 'nothing was running'}")
    return order


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--project", type=Path, default=Path(os.environ.get("PTUNE_PROJECT_DIR", Path.cwd())))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PREFECT_PORT", "4200")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("PTUNE_WORKERS", "2")))
    parser.add_argument("--worker-limit", type=int, default=int(os.environ.get("PTUNE_WORKER_LIMIT", "2")),
                        help="most flow runs one worker runs at once")
    parser.add_argument("--mlflow-port", type=int, default=None, help="also start the MLflow UI on this port")
    args = parser.parse_args(argv)
    if args.command == "up":
        up(args.project, args.port, args.workers, args.mlflow_port, args.worker_limit)
    elif args.command == "down":
        down(args.project)
    else:
        print(running(args.project.resolve()) or "not running")


if __name__ == "__main__":
    main()
