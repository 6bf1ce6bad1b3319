"""The registry load of bench_team.py: client processes that register model versions, set an alias on each
and read it back, all against one MLflow tracking URI, and the summary of what they saw.

Each client has its own registered model `bench-team-<i>` and its own run holding a 64-byte artifact, both
made by `prepare` before the clock starts, so the alias it reads back can only be the one it just set:
anything else counts as a wrong read. One cycle is three registry calls: `create_model_version` (which waits
until the version is READY, as MlflowClient does by default: one more request), `set_registered_model_alias`,
`get_model_version_by_alias`. Clients are processes, not threads: every `make run` and every worker is its
own process with its own database connections, and MLflow's SQL store shares one engine per process.
MLflow's HTTP retries are off in the clients (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0), so a failed call counts
once instead of hiding behind a back-off. A failed cycle is an error: SQLite's "database is locked" apart
from the others.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import statistics
import threading
import time
from pathlib import Path
from typing import Any

LOCKED = "database is locked"
ALIAS = "bench"
CONTEXT = multiprocessing.get_context("forkserver")  # clients fork from a process that imported mlflow once
CONTEXT.set_forkserver_preload(["mlflow.tracking"])


def quiet() -> None:
    """No HTTP retries, and none of MLflow's run links, "waiting for model version" or alembic lines."""
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def prepare(uri: str, clients: int, scratch: Path) -> list[tuple[str, str, str]]:
    """An experiment, then per client one finished run with a 64-byte artifact and one registered model;
    (model name, version source, run id) per client. Artifacts go where the server puts them (proxied on the
    team stack) or, without a server, next to the SQLite file."""
    from mlflow.tracking import MlflowClient

    quiet()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    location = None if uri.startswith("http") else (scratch / "mlartifacts").as_uri()
    experiment = client.create_experiment("bench-team", artifact_location=location)
    blob = scratch / "prompt.bin"
    blob.write_bytes(os.urandom(64))
    made = []
    for i in range(clients):
        run = client.create_run(experiment, run_name=f"client-{i}")
        client.log_artifact(run.info.run_id, str(blob), "prompt")
        client.set_terminated(run.info.run_id)
        name = f"bench-team-{i}"
        client.create_registered_model(name)
        made.append((name, f"{run.info.artifact_uri}/prompt", run.info.run_id))
    return made


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def client_process(uri: str, name: str, source: str, run_id: str, seconds: float, barrier: Any,
                   results: Any) -> None:
    """One client: connect, wait for the others, then cycle for `seconds`; a cycle in flight at the deadline
    finishes and counts. Puts its counts, cycle latencies (s) and first error messages on `results`."""
    from mlflow.tracking import MlflowClient

    quiet()
    found: dict[str, Any] = {"ok": 0, "locked": 0, "other": 0, "wrong": 0, "setup_errors": 0, "latencies": [],
                             "messages": []}
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.get_registered_model(name)  # stores and connections made before the clock starts
    except Exception as exc:  # a result here, not a failure of the bench
        found["setup_errors"] += 1
        found["messages"].append(one_line(exc))
    try:
        barrier.wait(timeout=300)
    except threading.BrokenBarrierError:  # a client died before the start: the others start anyway
        found["setup_errors"] += 1
    found["start"] = time.time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        begin = time.perf_counter()
        try:
            version = client.create_model_version(name, source, run_id=run_id).version
            client.set_registered_model_alias(name, ALIAS, version)
            read = client.get_model_version_by_alias(name, ALIAS).version
        except Exception as exc:  # every failure is counted, its first lines kept
            found["locked" if LOCKED in str(exc) else "other"] += 1
            if len(found["messages"]) < 3:
                found["messages"].append(one_line(exc))
            continue
        if read != version:
            found["wrong"] += 1
            continue
        found["ok"] += 1
        found["latencies"].append(time.perf_counter() - begin)
    found["end"] = time.time()
    results.put(found)


def run_load(uri: str, clients: int, seconds: float, scratch: Path) -> dict[str, Any]:
    """`clients` processes against `uri` for `seconds`, started together; their summary."""
    made = prepare(uri, clients, scratch)
    barrier, results = CONTEXT.Barrier(clients), CONTEXT.Queue()
    procs = [CONTEXT.Process(target=client_process, args=(uri, *m, seconds, barrier, results), daemon=True)
             for m in made]
    for proc in procs:
        proc.start()
    found: list[dict[str, Any]] = []
    while len(found) < len(procs):
        try:
            found.append(results.get(timeout=5))
        except queue.Empty:
            if not any(proc.is_alive() for proc in procs):
                break
    for proc in procs:
        proc.join(timeout=60)
    return {**summary(found), "crashed_clients": len(procs) - len(found)}


def summary(found: list[dict[str, Any]]) -> dict[str, Any]:
    """Cycles per second over the wall time from the first client's start to the last one's end, p50/p99 cycle
    latency (ms, successful cycles), error counts and up to 3 distinct messages."""
    if not found:
        return {"cycles_ok": 0, "cycles_per_s": 0.0, "errors": 0, "messages": ["no client reported"]}
    wall = max(f["end"] for f in found) - min(f["start"] for f in found)
    latencies = sorted(x for f in found for x in f["latencies"])
    ok = sum(f["ok"] for f in found)
    messages = list(dict.fromkeys(m for f in found for m in f["messages"]))[:3]
    counts = {key: sum(f[key] for f in found) for key in ("locked", "other", "wrong", "setup_errors")}
    return {"cycles_ok": ok, "cycles_per_s": round(ok / wall, 2), "calls_per_s": round(3 * ok / wall, 2),
            "p50_ms": quantile_ms(latencies, 0.5), "p99_ms": quantile_ms(latencies, 0.99),
            "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
            "errors": counts["locked"] + counts["other"], **counts, "wall_s": round(wall, 1),
            "messages": messages}


def quantile_ms(ordered: list[float], q: float) -> float | None:
    """The `q` quantile (nearest rank) of sorted seconds, in ms; None when there are none."""
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else None
