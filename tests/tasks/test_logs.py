"""ptune's evaluation progress reaches logging (ptune imports no Prefect), and the Prefect tasks turn it into a
progress artifact."""

from __future__ import annotations

import logging

from prefect import flow

from ptune.evaluation.scoring import evaluate
from tasks.logs import PTUNE, EvalProgress, attach_ptune_logs
from tests.flows.api import artifacts
from tests.ptune.evaluation.eval_helpers import make_examples, make_spec


def test_evaluation_logs_progress_every_few_batches(tiny_causal, caplog):
    caplog.set_level(logging.INFO, logger=PTUNE)
    evaluate(tiny_causal, make_spec(), make_examples(), batch_size=1, progress=False)  # 7 batches of 1
    lines = [r for r in caplog.records if getattr(r, "ptune_progress", None)]
    assert [r.ptune_progress[1] for r in lines] == list(range(1, 8))  # < 10 batches: a line each
    assert lines[-1].getMessage() == "toy_classification/test: 7/7 examples"


def test_eval_progress_becomes_a_prefect_artifact(tiny_causal, prefect_harness):
    @flow
    def scored() -> None:
        attach_ptune_logs()
        with EvalProgress("eval-progress-demo", "demo", passes=2):
            for _ in range(2):
                evaluate(tiny_causal, make_spec(), make_examples(), batch_size=2, progress=False)

    state = scored(return_state=True)
    found = artifacts(state.state_details.flow_run_id)["eval-progress-demo"]
    assert found.type == "progress" and float(found.data) == 100.0 and "done" in found.description
    assert any(isinstance(h, logging.Handler) and type(h).__name__ == "APILogHandler"
               for h in logging.getLogger(PTUNE).handlers)


def test_attach_undoes_a_logging_reconfiguration(monkeypatch):
    """A dictConfig with disable_existing_loggers (alembic's, dateparser's), a raised level or a removed handler
    would silence ptune in a long-lived worker; the next flow run's attach_ptune_logs() undoes all three."""
    import logging.config

    child = logging.getLogger("ptune.evaluation.scoring")
    parent = logging.getLogger(PTUNE)
    monkeypatch.setattr(parent, "handlers", [])
    monkeypatch.setattr(parent, "level", parent.level)
    monkeypatch.setattr(logging.root, "handlers", list(logging.root.handlers))
    monkeypatch.setattr(logging.root, "level", logging.root.level)
    others = {lg: lg.disabled for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)}
    try:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": True})
        parent.setLevel(logging.WARNING)
        assert child.disabled and not parent.isEnabledFor(logging.INFO)
        attach_ptune_logs()
        assert not child.disabled and not parent.disabled and child.isEnabledFor(logging.INFO)
        assert [type(h).__name__ for h in parent.handlers] == ["APILogHandler"]
    finally:  # the rest of this worker's tests get their loggers back
        for lg, disabled in others.items():
            lg.disabled = disabled


def test_every_flow_reattaches_ptune_logs_and_reports_failures():
    """HOOKS on every flow in flows/: on_running re-attaches ptune's logs, on_failure/on_crashed write the artifact."""
    import importlib
    import pkgutil

    from prefect import Flow

    import flows
    from flows.failure import failure_artifact, ptune_logs

    found = {obj.name: obj for info in pkgutil.iter_modules(flows.__path__)
             for obj in vars(importlib.import_module(f"flows.{info.name}")).values() if isinstance(obj, Flow)}
    assert {"nightly", "train-task", "validate", "promote", "reference", "sweep"} <= set(found)
    for name, fl in found.items():
        assert ptune_logs in fl.on_running_hooks, name
        assert failure_artifact in fl.on_failure_hooks and failure_artifact in fl.on_crashed_hooks, name


def test_ptune_lines_reach_the_console_of_a_flow_run(tmp_path, prefect_harness):
    """As in `make run`: a flow in a fresh process prints ptune's INFO lines on the console (stderr)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    code = ("import logging\nfrom prefect import flow\nimport flows.common\n"
            "@flow\ndef f():\n    logging.getLogger('ptune.demo').info('ptune line on the console')\nf()\n")
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path), "PYTHONPATH": str(repo), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_API_URL": PREFECT_API_URL.value()}  # the session's test API
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ptune line on the console" in done.stderr
