"""How a training run ends in MLflow when its process does not end it: a signal, or a process that is gone.

- SIGTERM / SIGINT: `stop_on_signals()` (the CLI's main thread) turns either into `Stopped`, a SystemExit with
  the conventional code 128 + signal (143, 130), so the stack unwinds and `end_failed` marks the open run
  KILLED, with tag `ptune.end_reason` naming the signal; any other exception marks it FAILED.
- SIGKILL, a lost machine, a worker thread that cannot take signals: every run records the host and pid that
  run it (`process_tags`). When the next training of the task starts, `end_stale_runs` ends the task's runs
  still RUNNING whose process is gone: same host and that pid is not alive (or now belongs to a process started
  after the run), or another host (or no record) and started more than FOREIGN_MAX_AGE_S ago.
Checkpoints, not MLflow runs, carry a training across a kill: the next run resumes the checkpoint in a new
MLflow run, so ending the old one never touches what a resume needs. MLflow is imported inside the functions,
so the CLI can install the signal handlers without paying for it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

HOST_TAG, PID_TAG, END_REASON_TAG = "ptune.host", "ptune.pid", "ptune.end_reason"
FOREIGN_MAX_AGE_S = 72 * 3600  # a run of another host (or with no process record) still RUNNING after 3 days is dead
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(SystemExit):
    """A SIGTERM or SIGINT caught by `stop_on_signals`: exits with code 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signal_name = signal.Signals(signum).name


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise `Stopped` (main thread only; a signal the process was started
    ignoring stays ignored). After the first one the previous handlers are back, so a second signal acts as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def stop(signum: int, frame: Any) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise Stopped(signum)

    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def process_tags() -> dict[str, str]:
    """The tags that let a later run tell whether this one's process is still alive."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def end_failed(run_id: str | None, exc: BaseException) -> None:
    """End run `run_id` after `exc`: KILLED for a signal or Ctrl-C, else FAILED. Best effort: never hides `exc`."""
    if run_id is None:
        return
    killed = isinstance(exc, Stopped | KeyboardInterrupt)
    reason = getattr(exc, "signal_name", "SIGINT") if killed else f"{type(exc).__name__}: {exc}"[:500]
    _terminate(run_id, "KILLED" if killed else "FAILED", reason)


def end_stale_runs(task: str, *, now: float | None = None, max_age_s: float = FOREIGN_MAX_AGE_S) -> list[str]:
    """Mark KILLED every RUNNING run of `ptune/<task>` whose process is gone (module doc); returns their ids."""
    from ptune.registry.tracking import client, ensure_experiment, experiment_name, guard

    with guard(f"search for stale runs in {experiment_name(task)}"):
        running = client().search_runs([ensure_experiment(task)], "attributes.status = 'RUNNING'",
                                       max_results=1000)
    ended = []
    for run in running:
        reason = stale_reason(run.data.tags, run.info.start_time / 1000, now or time.time(), max_age_s)
        if reason is not None:
            log.warning("run %s (%s) of %s was left RUNNING: %s; marked KILLED", run.info.run_id,
                        run.info.run_name, task, reason)
            _terminate(run.info.run_id, "KILLED", reason)
            ended.append(run.info.run_id)
    return ended


def stale_reason(tags: dict[str, str], started: float, now: float, max_age_s: float = FOREIGN_MAX_AGE_S) -> str | None:
    """Why a RUNNING run with these tags, started at `started` (epoch seconds), is dead; None while it may live."""
    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG, "")
    if host == socket.gethostname() and pid.isdigit():
        if _alive_since(int(pid), started):
            return None
        return f"its process {pid} on {host} is gone (found by the next training of the task)"
    if now - started > max_age_s:
        where = f"on host {host}" if host else "with no process record"
        return f"started {(now - started) / 3600:.0f} h ago {where} and never ended"
    return None


def _alive_since(pid: int, started: float) -> bool:
    """Is process `pid` alive and started no later than `started` (else the pid was reused)?"""
    import psutil

    try:
        process = psutil.Process(pid)
        return process.create_time() <= started + 1.0 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # ZombieProcess included
        return False
    except psutil.AccessDenied:
        return True


def _terminate(run_id: str, status: str, reason: str) -> None:
    from mlflow.exceptions import MlflowException

    from ptune.registry.tracking import client

    try:
        mlc = client()
        mlc.set_tag(run_id, END_REASON_TAG, reason)
        mlc.set_terminated(run_id, status)
    except (MlflowException, OSError) as exc:
        log.warning("could not mark run %s %s: %s", run_id, status, exc)
