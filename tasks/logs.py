"""ptune's own log lines where people look: the Prefect run logs (UI) and the console.

ptune never imports Prefect; it logs to `ptune.*` loggers. `attach_ptune_logs()` gives the `ptune` logger
Prefect's API handler (what PREFECT_LOGGING_EXTRA_LOGGERS=ptune also does, when set before Prefect starts) and
level INFO; records still propagate to the root logger, whose Prefect console handler prints them.
`EvalProgress` turns the evaluation's progress records (`extra["ptune_progress"]`) into a Prefect progress
artifact for the duration of one task.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

PTUNE = "ptune"


def attach_ptune_logs(level: str | None = None) -> logging.Logger:
    """Idempotent: the `ptune` logger at INFO (or $PTUNE_LOG_LEVEL) with one Prefect API handler, and every
    `ptune.*` logger enabled. Called at import of flows/common and again when every flow run starts (its
    `on_running` hook, flows/failure.py HOOKS): in a long-lived process another library may have reconfigured logging since
    (a `logging.config.dictConfig`/`fileConfig` with `disable_existing_loggers` silences every existing logger;
    alembic's and dateparser's do, when the root logger has no handler)."""
    logger = logging.getLogger(PTUNE)
    logger.setLevel(level or os.environ.get("PTUNE_LOG_LEVEL", "INFO"))
    logger.disabled = False
    for name, child in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith(PTUNE + ".") and isinstance(child, logging.Logger):
            child.disabled = False
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        handler = APILogHandler()
        handler.addFilter(_in_a_run)  # the same process may call ptune outside a run (CLI, tests): no warning then
        logger.addHandler(handler)
    return logger


def _in_a_run(record: logging.LogRecord) -> bool:
    """Send a record to the Prefect API only from inside a flow or task run, which it can be attached to."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class EvalProgress(logging.Handler):
    """Within `with EvalProgress(key, what):` the evaluation's progress lines update one progress artifact.

    Passes (the tuned prompt; zero-shot, k-shot, ... for the baselines) are counted: each restart of the
    example count is a new pass, so the bar covers `passes` x the split."""

    def __init__(self, key: str, what: str, passes: int = 1) -> None:
        super().__init__(logging.INFO)
        self.key, self.what, self.passes, self.pass_no, self.last, self.percent = key, what, passes, 0, -1, 0.0
        self.artifact_id: Any = None

    def __enter__(self) -> EvalProgress:
        self.artifact_id = create_progress_artifact(0.0, key=self.key, description=f"{self.what}: starting")
        logging.getLogger(PTUNE).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(PTUNE).removeHandler(self)
        done = exc[0] is None
        update_progress_artifact(self.artifact_id, 100.0 if done else self.percent,
                                 description=f"{self.what}: {'done' if done else 'stopped'}")

    def _percent(self, done: int, total: int) -> float:
        return min(100.0, 100.0 * (self.pass_no - 1 + done / max(total, 1)) / self.passes)

    def emit(self, record: logging.LogRecord) -> None:
        found = getattr(record, "ptune_progress", None)
        if not found:
            return
        desc, done, total = found
        if done <= self.last:
            self.pass_no += 1
        self.pass_no = max(self.pass_no, 1)
        self.last = done
        self.percent = self._percent(done, total)
        update_progress_artifact(self.artifact_id, self.percent,
                                 description=f"{self.what} (pass {self.pass_no}/{self.passes}): {desc} {done}/{total}")
