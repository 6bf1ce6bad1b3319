"""Team stack under load: the MLflow registry with concurrent clients on PostgreSQL vs SQLite, and one
fanned-out nightly of two tasks with 1 worker vs 2.

1. Registry (`--part registry`): `--clients` processes (8) each register a model version, set an alias on it
   and read the alias back, for `--seconds` (30), against each setup in turn (never two at once):
     postgres-server  the team stack's MLflow (`make up STACK=team`): `mlflow server --serve-artifacts` with
                      the team stack's 2 workers, on a throwaway PostgreSQL cluster (flows/postgres.py);
     sqlite-server    the local stack's MLflow (`make up MLFLOW=1`, flows.stack.start_mlflow_ui itself):
                      `mlflow server` on sqlite:///mlruns.db with MLflow's default 4 workers;
     sqlite-direct    no server: each client opens sqlite:///.../mlruns.db itself, as every process of
                      `make run` does; this is where SQLite's "database is locked" shows.
   Per setup: cycles/s (a cycle is 3 registry calls), p50/p99 cycle latency, errors (SQLite's "database is
   locked" apart), wrong alias reads; PostgreSQL's cycles/s over each SQLite setup's. Expected: 0 errors on
   PostgreSQL. The clients and what they count: bench/team_clients.py.
2. Nightly (`--part nightly`): a throwaway project (tests/support.py's toy task, the tests' tiny random llama)
   on the team stack (`--nightly-stack local`: the SQLite one) with the `ptune-gpu` limit at 2 (two GPU
   slots). The nightly deployment with fan_out runs two fresh tasks with 1 worker, then two other fresh tasks
   after a second worker has started (fresh tasks: both nightlies register first versions, no champion to
   beat). Wall time of each, from creating the flow run until it is final, each task's span and worker, and
   the ratio. On a 2-core machine the two workers share the same cores, so about 1x is expected; for two GPU
   machines it prints a projection from the 1-worker nightly's own task spans, labelled as not measured.
Writes bench/results/team.json (--quick: team_quick.json), keeping the other part's numbers; asserts nothing.
Run it under `nice` when the machine is also training. Servers and clusters it starts are stopped by pid.
Usage: python bench/bench_team.py [--part registry|nightly|all] [--seconds 30] [--clients 8]
       [--nightly-stack team|local] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "HF_EVALUATE_OFFLINE": "1", "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false",
                   "TOKENIZERS_PARALLELISM": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
    os.environ.setdefault(key, value)

from team_clients import run_load  # noqa: E402

RESULT = ROOT / "bench" / "results" / "team.json"
SETUPS = ("postgres-server", "sqlite-server", "sqlite-direct")
NIGHTLY_TASKS = {1: ["toy_w1a", "toy_w1b"], 2: ["toy_w2a", "toy_w2b"]}  # workers -> that nightly's tasks
SUBMITTED = re.compile(r"Worker '([^']+)' submitting flow run '([0-9a-f-]+)'")


def machine() -> dict[str, Any]:
    """CPU model, cores, whether it has AVX-512 BF16 and AMX units (/proc/cpuinfo), and the load average."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    model = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "unknown")
    flags = set(next((x.split(":", 1)[1].split() for x in lines if x.startswith("flags")), []))
    return {"cpu": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx": bool(flags & {"amx_bf16", "amx_tile"}), "loadavg": loadavg()}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def mlflow_server(setup: str, scratch: Path) -> tuple[str, int | None]:
    """Start the MLflow server of `setup` in project folder `scratch`: (tracking URI, pid); direct: no pid."""
    from flows.postgres import database_url, serve_databases
    from flows.processes import running, spawn, state_dir
    from flows.stack import BIN, QUIET, Team, start_mlflow_ui, wait_healthy
    from tests.support import free_port

    if setup == "sqlite-direct":
        return f"sqlite:///{scratch / 'mlruns.db'}", None
    port, env = free_port(), {**QUIET, **os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if setup == "sqlite-server":
        start_mlflow_ui(scratch, port, env)
        pid = running(scratch)["mlflow"]
    else:  # the command line of flows.stack.start_team's MLflow, on a cluster of its own
        server, _ = serve_databases(scratch / "pg", free_port(), ("mlflow",))
        cmd = [str(BIN / "mlflow"), "server", "--serve-artifacts", "--artifacts-destination",
               str(scratch / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(Team().mlflow_workers)]
        backend = {"MLFLOW_BACKEND_STORE_URI": database_url(server, "mlflow")}  # never on the command line
        pid = spawn(scratch, "mlflow", cmd, {**env, **backend}, scratch)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, pid, state_dir(scratch) / "mlflow.log", 300, f"the MLflow server ({setup})")
    return url, pid


def registry_setup(setup: str, clients: int, seconds: float) -> dict[str, Any]:
    """The load against one setup; its server stopped and its cluster removed whatever happens."""
    from flows.postgres import Cluster
    from flows.processes import running, state_dir, stop

    scratch = Path(tempfile.mkdtemp(prefix=f"bench-team-{setup}-"))
    try:
        uri, _ = mlflow_server(setup, scratch)
        found = run_load(uri, clients, seconds, scratch)
    finally:
        for pid in running(scratch).values():  # the server this setup started (its pid file, its folder)
            stop(pid, 20)
        if (scratch / "pg").exists():
            Cluster(scratch / "pg", 0).remove()  # pg_ctl stop by its data folder, then its files
    log = state_dir(scratch) / "mlflow.log"
    if log.exists():
        found["server_log_locked"] = log.read_text(errors="replace").count("database is locked")
    shutil.rmtree(scratch, ignore_errors=True)
    return found


def registry_part(clients: int, seconds: float) -> dict[str, Any]:
    """Every setup in turn, the side-by-side table, PostgreSQL's ratios and the 0-errors expectation."""
    results = {}
    for setup in SETUPS:
        print(f"{setup}: {clients} clients for {seconds:g} s ...", flush=True)
        results[setup] = registry_setup(setup, clients, seconds)
    print(f"\n{'setup':17}{'cycles/s':>10}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ok':>7}{'locked':>8}"
          f"{'other':>7}{'wrong':>7}")
    for setup, r in results.items():
        print(f"{setup:17}{r['cycles_per_s']:>10}{r.get('calls_per_s', 0):>9}{r.get('p50_ms')!s:>9}"
              f"{r.get('p99_ms')!s:>9}{r['cycles_ok']:>7}{r.get('locked', 0):>8}{r.get('other', 0):>7}"
              f"{r.get('wrong', 0):>7}")
    for setup, r in results.items():
        for message in r.get("messages", []):
            print(f"  {setup}: {message}")
    pg, ratios = results["postgres-server"], {}
    for reference in SETUPS[1:]:
        ref = results[reference]["cycles_per_s"]
        key = "postgres_over_" + reference.replace("-", "_")
        ratios[key] = round(pg["cycles_per_s"] / ref, 2) if ref else None
        print(f"postgres-server / {reference} cycles/s: {ratios[key]}")
    met = pg.get("errors", 0) + pg.get("wrong", 0) + pg.get("crashed_clients", 0) == 0
    print(f"expected 0 errors on PostgreSQL: {'met' if met else 'MISSED'} ({pg.get('errors', 0)} errors, "
          f"{pg.get('wrong', 0)} wrong reads)")
    return {"setups": results, "ratios": ratios, "postgres_zero_errors": met}


def nightly_project(scratch: Path) -> Path:
    """tests/support.py's project with the tiny llama and four copies of its clean toy task."""
    import yaml

    from tests.support import build_project
    from tests.tiny_models import build_causal

    project = build_project(scratch / "project", build_causal(scratch / "tiny-llama"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    for name in (*NIGHTLY_TASKS[1], *NIGHTLY_TASKS[2]):
        params["tasks"][name] = dict(params["tasks"]["toy"])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in ("flows", "tasks"):  # the deployments' entrypoints, relative to the project folder
        (project / name).symlink_to(ROOT / name)
    return project


def one_nightly(client: Any, tasks: list[str], timeout: float = 1800) -> dict[str, Any]:
    """The nightly deployment with fan_out over `tasks`: wall seconds from creating the run until it is final,
    its state, and per task the train run's span, its running time and the worker that ran it."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    nightly = client.read_deployment_by_name("nightly/nightly")
    form = {"params": {"tasks": tasks, "fan_out": True}}
    start = time.perf_counter()
    run = client.create_flow_run_from_deployment(nightly.id, parameters=form)
    deadline = start + timeout
    while not (run := client.read_flow_run(run.id)).state.is_final() and time.perf_counter() < deadline:
        time.sleep(0.5)
    wall = time.perf_counter() - start
    names = FlowRunFilterName(any_=[f"train-{t}" for t in tasks])  # fan_out's flow_run_name
    trains = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=names))
    workers = submitting_workers(client, [run.id, *(t.id for t in trains)])
    return {"wall_s": round(wall, 1), "state": run.state.name, "message": run.state.message or "",
            "nightly_worker": workers.get(str(run.id)),
            "tasks": {t.parameters["params"]["task"]: {
                "submitted_s": submitted_seconds(client, t), "state": t.state.name,
                "run_s": round(t.total_run_time.total_seconds(), 1), "worker": workers.get(str(t.id))}
                for t in trains}}


def submitting_workers(client: Any, ids: list[Any], seconds: float = 20) -> dict[str, str]:
    """flow-run id -> the worker that submitted it, from the worker's own line in the run's logs."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    workers: dict[str, str] = {}
    deadline = time.monotonic() + seconds  # workers ship their logs in batches
    while len(workers) < len(ids) and time.monotonic() < deadline:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        workers = {m.group(2): m.group(1) for log in logs if (m := SUBMITTED.search(log.message))}
        time.sleep(1)
    return workers


def submitted_seconds(client: Any, run: Any) -> float | None:
    """Seconds from the worker's submission (the run's first Pending state) to its end: the flow-run
    process's start-up and imports, then the run itself (`total_run_time` counts only the Running part)."""
    pending = [s.timestamp for s in client.read_flow_run_states(run.id) if s.type.value == "PENDING"]
    return round((run.end_time - min(pending)).total_seconds(), 1) if pending and run.end_time else None


def nightly_env(project: Path, scratch: Path, stack: str) -> None:
    """This process's environment, which `flows.stack up` and its workers inherit: the project, its own
    Prefect home, two GPU slots, workers that poll every second and log which runs they submit."""
    from tests.support import project_env_vars

    os.environ.update({**project_env_vars(project), "PREFECT_HOME": str(scratch / "prefect-home"),
                       "PTUNE_GPUS": "2", "PREFECT_WORKER_QUERY_SECONDS": "1", "PYTHONPATH": str(ROOT),
                       "PTUNE_TZ": "UTC", "PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL": "INFO"})
    os.environ.pop("PTUNE_THREADS", None)  # ptune's own choice per model (1 thread for the tiny one)
    team_sets = ("MLFLOW_TRACKING_URI",) if stack == "team" else ()  # team `up` sets it to its MLflow
    for key in ("PREFECT_API_URL", "PTUNE_DATABASE_URL", *team_sets):
        os.environ.pop(key, None)


def nightly_part(stack: str) -> dict[str, Any]:
    """Both nightlies on one stack: `up` with 1 worker, then a second worker as `up` starts them; `down`."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.processes import spawn
    from flows.stack import BIN, cluster, stack_env
    from tests.support import free_port

    scratch = Path(tempfile.mkdtemp(prefix="bench-team-nightly-"))
    project = nightly_project(scratch)
    nightly_env(project, scratch, stack)
    port, mlflow_port, pg_port = free_port(), free_port(), free_port()
    team = ["--stack", "team", "--mlflow-port", str(mlflow_port), "--pg-port", str(pg_port)]

    def flows_stack(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flows.stack", *argv, "--project", str(project)],
                              cwd=ROOT, capture_output=True, text=True, timeout=900)

    print(f"nightly: {stack} stack up (1 worker) in {project} ...", flush=True)
    results: dict[str, Any] = {"stack": stack}
    try:
        started = flows_stack("up", "--port", str(port), "--workers", "1", *(team if stack == "team" else []))
        if started.returncode != 0:
            raise SystemExit(f"flows.stack up failed:\n{started.stdout[-3000:]}\n{started.stderr[-3000:]}")
        env = stack_env(project, port, mlflow_port if stack == "team" else None)
        if stack == "team":
            env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{mlflow_port}"
        worker_2 = [str(BIN / "prefect"), "worker", "start", "--pool", "ptune-process", "--type", "process",
                    "--name", "ptune-worker-2", "--limit", "2"]  # flows.stack.start_workers' command
        api = temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]})
        with api, get_client(sync_client=True) as client:
            for workers, tasks in NIGHTLY_TASKS.items():
                if workers == 2:
                    spawn(project, "worker-2", worker_2, env, project)  # its pid file: `down` stops it too
                print(f"nightly: {workers} worker(s), tasks {', '.join(tasks)} ...", flush=True)
                results[f"workers_{workers}"] = one_nightly(client, tasks)
    finally:
        print(flows_stack("down").stdout.strip())
        if stack == "team":
            cluster(project).remove()
    shutil.rmtree(scratch, ignore_errors=True)
    return report_nightly(results)


def report_nightly(results: dict[str, Any]) -> dict[str, Any]:
    """The two nightlies side by side, their ratio, this machine's expectation, the two-machine projection."""
    one, two = results["workers_1"], results["workers_2"]
    print(f"\n{'workers':>7}{'wall s':>9}  {'state':11}per task: submitted-to-end s / running s (worker)")
    for workers, found in ((1, one), (2, two)):
        tasks = ", ".join(f"{name} {t['submitted_s']} / {t['run_s']} ({t['worker']})"
                          for name, t in sorted(found["tasks"].items()))
        print(f"{workers:>7}{found['wall_s']:>9}  {found['state']:11}{tasks}")
    results["ratio_1_over_2"] = round(one["wall_s"] / two["wall_s"], 2) if two["wall_s"] else None
    print(f"1 worker / 2 workers, wall time: {results['ratio_1_over_2']}x")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"expected on this machine: about 1x for compute-bound tasks ({os.cpu_count()} cores, shared by "
          f"both workers and whatever else runs; load average now {load}); "
          f"the tiny model's tasks are mostly one-threaded process start-up and orchestration, which two "
          f"workers overlap, so more is possible here")
    spans = [t["submitted_s"] for t in one["tasks"].values()]
    if len(spans) == 2 and None not in spans and one["state"] == "Completed":
        alone = one["wall_s"] - sum(spans) + max(spans)  # what is paid once, then the longer task
        results["projection_two_gpu_machines"] = round(one["wall_s"] / alone, 2)
        print(f"PROJECTION, not measured: two GPU machines with one worker each: about "
              f"{results['projection_two_gpu_machines']}x for these two tasks. That is the 1-worker wall "
              f"time over the same time less the shorter task's submitted-to-end span: the nightly's own "
              f"start, submission and summary are paid once, and each machine runs its task as fast as the "
              f"one worker here. For two equal tasks whose training dominates: about 2x, less those shared "
              f"steps.")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("registry", "nightly", "all"), default="all")
    parser.add_argument("--seconds", type=float, default=30, help="registry load per setup")
    parser.add_argument("--clients", type=int, default=8, help="concurrent registry client processes")
    parser.add_argument("--nightly-stack", choices=("team", "local"), default="team",
                        help="the stack the nightlies run on (local: Prefect and MLflow on SQLite)")
    parser.add_argument("--quick", action="store_true",
                        help="a check of the harness: 5 s of registry load per setup; writes team_quick.json")
    args = parser.parse_args()
    seconds = 5 if args.quick else args.seconds
    path = RESULT.with_name("team_quick.json") if args.quick else RESULT
    out = json.loads(path.read_text()) if path.exists() else {}
    command = " ".join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
             "command": command}
    out.update(stamp)
    if args.part in ("registry", "all"):
        found = registry_part(args.clients, seconds)
        out["registry"] = {**stamp, "clients": args.clients, "seconds": seconds, "http_retries": 0,
                           **found, "loadavg_end": loadavg()}
    if args.part in ("nightly", "all"):
        stamp["machine"] = machine()
        found = nightly_part(args.nightly_stack)
        out["nightly"] = {**stamp, "tasks": NIGHTLY_TASKS, "gpu_limit": 2, **found, "loadavg_end": loadavg()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
