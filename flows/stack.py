"""`make up` / `make down`: the Prefect stack in the background, one command each.

`up` starts `prefect server` (127.0.0.1), waits until its API answers, creates the pool, limits, alert and
deployments (`flows.prefect_setup` + `prefect deploy --all`), then starts the workers (and, with `--mlflow`,
the MLflow UI). Each process gets a pid file and a log under `.ptune/stack/` of the project. A second `up`
finds the pid files of live processes and does nothing; `down` stops exactly those processes (workers
first, then the servers), each with its whole process group, and removes their pid files.

`--stack team` (`make up STACK=team`, docs/deploy.md) puts both servers on PostgreSQL: the project's cluster
(flows/postgres.py, started with `pg_ctl` and stopped the same way by `down`, only if this `up` started it) or
`--database-url` (a managed server). Prefect gets database `prefect`, MLflow database `mlflow` and proxies
artifacts to `.ptune/stack/artifacts` (`--artifacts-destination`, or an `s3://` URI), so a worker needs only
PREFECT_API_URL and MLFLOW_TRACKING_URI. Database URLs reach the servers through their environment (never the
command line, which every user can read in /proc) and are printed redacted.

Pid files and process trees: `flows.processes`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from flows.postgres import Cluster, PostgresError, check, database_url, serve_databases
from flows.processes import record, running, spawn, start_time, state_dir, stop
from ptune.paths import redacted

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUIET = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
         "PREFECT_LOGGING_EXTRA_LOGGERS": "ptune", "PREFECT_RESULTS_DEFAULT_SERIALIZER": "json"}


@dataclass(frozen=True)
class Team:
    """The team stack's settings: where PostgreSQL listens (or which server to use) and MLflow's artifact store."""

    pg_port: int = 5433  # the project's cluster; 5432 is left to a system PostgreSQL
    database_url: str | None = None  # postgresql://USER:PASSWORD@HOST:PORT of a managed server instead
    artifacts: str | None = None  # --artifacts-destination; default <project>/.ptune/stack/artifacts
    mlflow_workers: int = 2  # uvicorn processes of the MLflow server

    def destination(self, project: Path) -> str:
        return self.artifacts or str(state_dir(project) / "artifacts")


def cluster(project: Path, port: int = 0) -> Cluster:
    """The project's PostgreSQL cluster (`.ptune/stack/pg`); `port` matters only to start it."""
    return Cluster(state_dir(project) / "pg", port)


def team_info(project: Path) -> dict[str, str]:
    """What the last team `up` recorded (addresses, redacted database URL), {} for a local stack."""
    found = state_dir(project) / "team.json"
    return json.loads(found.read_text()) if found.exists() else {}


def wait_healthy(url: str, pid: int, log: Path, timeout: float = 120, what: str = "the Prefect server") -> None:
    """Poll `<url>/health` until it answers 200; fail with the log's tail if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if start_time(pid) is None:
            break
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise SystemExit(f"{what} did not answer at {url} (log {log}):\n{tail}")


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


def up(project: Path, port: int, workers: int = 2, mlflow_port: int | None = None, worker_limit: int = 2,
       team: Team | None = None, deploy_flows: bool = True) -> dict[str, int]:
    """Start what is not running yet; returns name -> pid of the stack. A running stack is left as it is; an
    `up` that fails stops what it started.

    Each worker runs at most `worker_limit` flow runs at once (`prefect worker start --limit`). With the default 2,
    a fanned-out nightly (one parent flow run waiting on one deployment run per task) never has a worker take
    every child itself: the children spread over the workers, and the `ptune-gpu` limit still allows one training
    per slot whichever worker runs it. With `team`, MLflow and Prefect run on PostgreSQL (`start_team`); without
    `deploy_flows`, the deployments are left to the machines whose workers run them (`make deploy` there).
    """
    project = project.resolve()
    if running(project):
        print(f"already up: {running(project)} (logs in {state_dir(project)}); `make down` stops it")
        return running(project)
    if team is not None:
        mlflow_port = mlflow_port or 5000
    env = stack_env(project, port, mlflow_port)
    try:
        if team is not None:
            env["MLFLOW_TRACKING_URI"] = start_team(project, port, mlflow_port, team, env)
        else:
            start_prefect(project, port, env)
        if deploy_flows:
            deploy(env)
        start_workers(project, workers, worker_limit, env)
    except BaseException:
        if running(project):
            down(project)
        raise
    if mlflow_port and team is None:
        start_mlflow_ui(project, mlflow_port, env)
    print(f"Prefect UI: http://127.0.0.1:{port}   (API {env['PREFECT_API_URL']}; logs in {state_dir(project)})")
    if team is not None:
        print(f"a worker anywhere needs only: PREFECT_API_URL={env['PREFECT_API_URL']} "
              f"MLFLOW_TRACKING_URI={env['MLFLOW_TRACKING_URI']}")
    return running(project)


def start_workers(project: Path, workers: int, worker_limit: int, env: dict[str, str]) -> None:
    prefect = str(BIN / "prefect")
    for i in range(1, workers + 1):
        spawn(project, f"worker-{i}", [prefect, "worker", "start", "--pool", "ptune-process", "--type", "process",
                                        "--name", f"ptune-worker-{i}", "--limit", str(worker_limit)], env, project)


def start_mlflow_ui(project: Path, port: int, env: dict[str, str]) -> None:
    """The local stack's MLflow UI (`make up MLFLOW=1`): the project's SQLite store."""
    spawn(project, "mlflow", [str(BIN / "mlflow"), "server", "--backend-store-uri", "sqlite:///mlruns.db",
                              "--artifacts-destination", "./mlartifacts", "--host", "127.0.0.1", "--port", str(port)],
          {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, project)
    print(f"MLflow UI:  http://127.0.0.1:{port}")


def start_prefect(project: Path, port: int, env: dict[str, str], timeout: float = 120) -> None:
    """`prefect server start` on 127.0.0.1:`port` (its database from `env`), waiting until its API answers."""
    pid = spawn(project, "server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                     "--port", str(port)], env, project)
    wait_healthy(env["PREFECT_API_URL"], pid, state_dir(project) / "server.log", timeout)


def start_team(project: Path, port: int, mlflow_port: int, team: Team, env: dict[str, str]) -> str:
    """PostgreSQL (databases `prefect`, `mlflow` and `optuna`: sweeps of every worker join one study), then the
    Prefect server and an MLflow server that proxies
    artifacts; returns the tracking URI workers use. The first start of each server creates its schema."""
    server, started = serve_databases(state_dir(project) / "pg", team.pg_port, ("prefect", "mlflow", "optuna"),
                                      team.database_url)
    env["PTUNE_OPTUNA_STORAGE"] = database_url(server, "optuna")  # this machine's workers share sweeps by it
    if started is not None:
        record(project, "postgres", started)  # `down` stops it with pg_ctl, and only if this up started it
    tracking = f"http://127.0.0.1:{mlflow_port}"
    mlflow = spawn(project, "mlflow", [str(BIN / "mlflow"), "server", "--serve-artifacts", "--artifacts-destination",
                                        team.destination(project), "--host", "127.0.0.1", "--port", str(mlflow_port),
                                        "--workers", str(team.mlflow_workers)],
                    {**env, "MLFLOW_BACKEND_STORE_URI": database_url(server, "mlflow"),
                     "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, project)
    start_prefect(project, port, {**env, "PREFECT_SERVER_DATABASE_CONNECTION_URL":
                                  database_url(server, "prefect", "postgresql+asyncpg")}, timeout=300)
    wait_healthy(tracking, mlflow, state_dir(project) / "mlflow.log", 300, "the MLflow server")
    info = {"stack": "team", "database": redacted(server), "pg_port": team.pg_port, "prefect": env["PREFECT_API_URL"],
            "mlflow": tracking, "artifacts": team.destination(project), "cluster": team.database_url is None}
    (state_dir(project) / "team.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"PostgreSQL: {info['database']} (databases prefect, mlflow, optuna)")
    print(f"MLflow:     {tracking}   (artifacts proxied to {info['artifacts']})")
    return tracking


def down(project: Path, timeout: float = 20) -> list[str]:
    """Stop the processes `up` started (workers and MLflow before the Prefect server, PostgreSQL last, with
    `pg_ctl stop`); returns their names."""
    project = project.resolve()
    alive = running(project)
    order = sorted(alive, key=lambda name: (name == "postgres", name == "server"))
    for name in order:
        if name == "postgres":
            cluster(project).stop()
        else:
            stop(alive[name], timeout)
    for pid_file in [*state_dir(project).glob("*.pid"), state_dir(project) / "team.json"]:
        pid_file.unlink(missing_ok=True)
    print(f"stopped: {', '.join(order) or 'nothing was running'}")
    return order


def status(project: Path) -> list[str]:
    """`python -m flows.stack status`: what runs; for a team stack the two URLs a worker needs and whether the
    project's cluster answers (one line naming it, redacted, when it does not)."""
    alive, info = running(project), team_info(project)
    lines = [str(alive or "not running")]
    if alive and info:
        lines.append(f"PREFECT_API_URL={info['prefect']} MLFLOW_TRACKING_URI={info['mlflow']} "
                     f"(artifacts {info['artifacts']})")
        try:
            if info.get("cluster"):
                check(cluster(project, int(info["pg_port"])).url("postgres"))
            lines.append(f"database {info['database']}: " + ("answers" if info.get("cluster") else "not checked"))
        except PostgresError as exc:
            lines.append(str(exc))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--project", type=Path, default=Path(os.environ.get("PTUNE_PROJECT_DIR", Path.cwd())))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PREFECT_PORT", "4200")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("PTUNE_WORKERS", "2")))
    parser.add_argument("--worker-limit", type=int, default=int(os.environ.get("PTUNE_WORKER_LIMIT", "2")),
                        help="most flow runs one worker runs at once")
    parser.add_argument("--mlflow-port", type=int, default=None,
                        help="also start the MLflow UI on this port (team stack: the MLflow server's, default 5000)")
    parser.add_argument("--stack", choices=("local", "team"), default=os.environ.get("PTUNE_STACK", "local"),
                        help="local: SQLite; team: Prefect and MLflow on PostgreSQL, artifacts served by MLflow")
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("PG_PORT", "5433")),
                        help="team: port of the project's PostgreSQL cluster")
    parser.add_argument("--database-url", default=os.environ.get("PTUNE_DATABASE_URL") or None,
                        help="team: postgresql://USER:PASSWORD@HOST:PORT of a managed server instead of the project's "
                             "cluster (prefer the PTUNE_DATABASE_URL environment variable)")
    parser.add_argument("--artifacts", default=os.environ.get("PTUNE_ARTIFACTS_DESTINATION") or None,
                        help="team: MLflow's --artifacts-destination (a folder or s3://bucket/prefix)")
    parser.add_argument("--mlflow-workers", type=int, default=2, help="team: processes of the MLflow server")
    parser.add_argument("--deploy", action=argparse.BooleanOptionalAction, default=True,
                        help="register the deployments (--no-deploy: the workers' machines do, with `make deploy`)")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    if args.command == "up":
        team = (Team(args.pg_port, args.database_url, args.artifacts, args.mlflow_workers)
                if args.stack == "team" else None)
        try:
            up(project, args.port, args.workers, args.mlflow_port, args.worker_limit, team, args.deploy)
        except PostgresError as exc:
            raise SystemExit(f"error: {exc}") from None
    elif args.command == "down":
        down(project)
    else:
        print("\n".join(status(project)))


if __name__ == "__main__":
    main()
