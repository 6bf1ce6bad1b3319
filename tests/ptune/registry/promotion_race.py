"""Two promotions of one task from two "machines" at once: worker processes, each with its own HOME,
PTUNE_HOME, PREFECT_HOME and working folder, sharing only the registry and the lock service under test.

The interleaving is forced by events, never by sleeping: worker `a` enters the promotion lock and, inside it
(its evaluator's first call), waits until worker `b` is seen either blocked by the lock (PostgreSQL lists its
advisory lock request as not granted; Prefect answered its slot request 423 Locked) or inside the section too
(the lock let it in). `b` starts promoting only once `a` is inside. So with a lock that works, `b` decides
after `a` wrote; with one that does not, both decide on the same registry state.

A worker runs as `python -m tests.ptune.registry.promotion_race CONFIG_JSON` and writes `result-<name>.json`:
its decision, or the error promotion raised, and whether the other worker was inside the lock with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.tracking import MlflowClient

from ptune.registry import model_registry
from tests.ptune.registry.helpers import TASK

REPO = Path(__file__).resolve().parents[3]
DEADLINE_S = 180.0


def wait_for(what: str, ready: Callable[[], bool], deadline_s: float = DEADLINE_S) -> None:
    """Poll `ready` until it holds (an event, checked every 50 ms); AssertionError naming `what` after the deadline."""
    end = time.monotonic() + deadline_s
    while not ready():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what} after {deadline_s:.0f} s")
        time.sleep(0.05)


def advisory_waiters(url: str) -> int:
    """Advisory lock requests PostgreSQL has not granted yet (processes blocked in pg_advisory_lock)."""
    import psycopg

    from ptune.registry.locks import libpq_url

    with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=10) as conn:
        return conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0]


def report_prefect_denials(marker: Path) -> None:
    """Touch `marker` whenever the Prefect server refuses this process a concurrency slot (423 Locked)."""
    import httpx
    from prefect.client.orchestration import PrefectClient

    real = PrefectClient.increment_concurrency_slots_with_lease

    async def spy(self, *args, **kwargs):
        try:
            return await real(self, *args, **kwargs)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 423:
                marker.touch()
            raise
    PrefectClient.increment_concurrency_slots_with_lease = spy


class Worker:
    """One side of the race: its markers in the shared `sync` folder, its lock and its evaluator."""

    def __init__(self, cfg: dict) -> None:
        self.cfg, self.sync = cfg, Path(cfg["sync"])
        self.me, self.other = cfg["name"], cfg["other"]
        self.overlap, self.entered = False, False

    def marker(self, kind: str, who: str) -> Path:
        return self.sync / f"{kind}-{who}"

    def other_blocked(self) -> bool:
        if self.marker("denied", self.other).exists():
            return True
        url = os.environ.get("PTUNE_LOCK_URL")
        return bool(url) and advisory_waiters(url) > 0

    def evaluate(self, version: str, split: str) -> dict[str, float]:
        """The promotion's evaluator; its first call is the first thing promotion does inside the lock."""
        if not self.entered:
            self.entered = True
            self.marker("inside", self.me).touch()
            other_in = lambda: (self.marker("inside", self.other).exists()  # noqa: E731
                                and not self.marker("left", self.other).exists())
            if self.me == "a":
                wait_for(f"{self.other} to be blocked by the lock or inside it",
                         lambda: other_in() or self.other_blocked())
            self.overlap = other_in()
        return {f"{split}/accuracy": self.cfg["scores"][str(version)]}

    @contextmanager
    def traced(self, lock, task: str) -> Iterator[None]:
        with lock(task):
            try:
                yield
            finally:
                self.marker("left", self.me).touch()  # still inside: the other may enter only after this


def run_worker(cfg: dict) -> None:
    from ptune.registry import locks, promotion

    worker = Worker(cfg)
    if cfg["lock"] == "prefect":
        from tasks.registry import promotion_lock as lock

        report_prefect_denials(worker.marker("denied", worker.me))
    else:
        lock = locks.configured_lock()
    if worker.me == "b":
        wait_for("a to be inside the lock", worker.marker("inside", "a").exists)
    try:
        decision = promotion.promote_if_better(TASK, cfg["version"], evaluator=worker.evaluate,
                                               reevaluate_candidate=True, lock=lambda t: worker.traced(lock, t))
        result = {"version": decision.version, "alias": decision.alias, "reason": decision.reason,
                  "champion_version": decision.champion_version}
    except Exception as exc:  # noqa: BLE001 - reported to the test, which asserts on it
        result = {"error": f"{type(exc).__name__}: {exc}"}
    (worker.sync / f"result-{worker.me}.json").write_text(json.dumps({**result, "overlap": worker.overlap}))


def race(root: Path, versions: dict[str, str], scores: dict[str, float], lock: str,
         env: dict[str, str] | None = None) -> dict[str, dict]:
    """Run workers `a` and `b` (promoting versions["a"], versions["b"]) in their own folders under `root`;
    their results by name. The registry is this process's MLFLOW_TRACKING_URI."""
    sync = root / "sync"
    sync.mkdir(parents=True)
    procs = {}
    for name, other in (("a", "b"), ("b", "a")):
        home = root / f"machine-{name}"
        home.mkdir()
        cfg = {"name": name, "other": other, "version": versions[name], "sync": str(sync), "lock": lock,
               "scores": {str(k): v for k, v in scores.items()}}
        machine = {"HOME": str(home), "PTUNE_HOME": str(home / ".ptune"), "PTUNE_PROJECT_DIR": str(home),
                   "PREFECT_HOME": str(home / ".prefect"), "PYTHONPATH": str(REPO), "PTUNE_THREADS": "1"}
        procs[name] = subprocess.Popen([sys.executable, "-m", "tests.ptune.registry.promotion_race", json.dumps(cfg)],
                                       cwd=home, env={**os.environ, **machine, **(env or {})},
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        outputs = {name: proc.communicate(timeout=DEADLINE_S + 120)[0] for name, proc in procs.items()}
    finally:
        for proc in procs.values():  # a worker past its deadline is ours to end
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in procs.items():
        assert proc.returncode == 0, f"worker {name} failed:\n{outputs[name][-4000:]}"
    return {name: json.loads((sync / f"result-{name}.json").read_text()) for name in procs}


def aliases() -> dict[str, str]:
    return {k: str(v) for k, v in MlflowClient().get_registered_model(model_registry.model_name(TASK)).aliases.items()}


def assert_serialized(results: dict[str, dict], versions: dict[str, str]) -> None:
    """`a` went first and moved @champion; `b` then saw `a` as champion and lost to it: one alias move, no lost
    update, both reasons recorded as tags."""
    a, b = results["a"], results["b"]
    assert "error" not in a and "error" not in b, results
    assert not a["overlap"] and not b["overlap"]
    assert a["alias"] == "champion" and "no champion yet" in a["reason"]
    assert b["alias"] == "challenger" and b["champion_version"] == versions["a"]
    assert f"below champion v{versions['a']}" in b["reason"]
    assert aliases() == {"champion": versions["a"], "challenger": versions["b"]}
    for name, decided in (("a", "champion"), ("b", "challenger")):
        tags = model_registry.version_tags(TASK, versions[name])
        assert tags["promotion_decision"] == decided and tags["promotion_reason"] == results[name]["reason"]


if __name__ == "__main__":
    run_worker(json.loads(sys.argv[1]))
