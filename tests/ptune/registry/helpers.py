"""Helpers for the registry, promotion and pyfunc tests: an isolated MLflow store, tiny prompts, servers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from ptune.data.catalog import get_task
from ptune.data.splits import Example, write_jsonl
from ptune.model import artifacts
from ptune.model.artifacts import PromptMeta
from ptune.model.base import BaseModel
from ptune.registry import model_registry, tracking

TASK = "rotten_tomatoes"
ROWS = [("the film was good and witty", "fresh"), ("bad awful boring plot", "rotten"), ("gorgeous fun story", "fresh"),
        ("dull", "rotten"), ("happy great actor", "fresh"), ("sad boring movie", "rotten")]


def use_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SQLite tracking/registry store, project dir and PTUNE_HOME, all under tmp_path."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path / "project"))
    monkeypatch.setenv("PTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("PTUNE_MLFLOW_ARTIFACTS", raising=False)
    (tmp_path / "project").mkdir()
    return tmp_path


def examples(n: int = len(ROWS)) -> list[Example]:
    """Rotten-tomatoes-style examples formatted by the catalog's own formatter."""
    spec = get_task(TASK)
    out = []
    for i, (text, category) in enumerate(ROWS[:n]):
        source, target = spec.formatter({"text": text, "category": category})
        out.append(Example(str(i), source, target, {"text": text, "category": category}))
    return out


def write_split(split: str = "test", rows: list[Example] | None = None) -> None:
    """Write data/prepared/<TASK>/<split>.jsonl in the project dir (the 'current' split)."""
    from ptune.paths import prepared_dir

    rows = rows if rows is not None else examples()
    write_jsonl(prepared_dir(TASK) / f"{split}.jsonl",
                [{"id": e.id, "source": e.source, "target": e.target, "fields": e.fields} for e in rows])


def make_prompt(path: Path, base: BaseModel, seed: int = 0, fingerprint: str | None = None,
                metrics: dict[str, float] | None = None) -> Path:
    """A random 4-token prompt artifact for `base` (optionally with a wrong fingerprint)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(4, base.hidden_size, generator=gen) * 0.5  # (P, d)
    meta = PromptMeta(task=TASK, base_spec=base.spec, base_fingerprint=fingerprint or base.fingerprint,
                      init="random", label_words=("negative", "positive"), data_version="dv-test",
                      train_config={"n_tokens": 4, "lr": 0.3}, metrics=metrics or {})
    return artifacts.save_prompt(path, weight, meta)


def register(tmp: Path, base: BaseModel, score: float, baseline: float = 0.5, seed: int = 0,
             fingerprint: str | None = None) -> model_registry.RegisteredPrompt:
    """Log a finished run (test/accuracy=score, zero-shot baseline) and register its prompt."""
    prompt_dir = make_prompt(tmp / f"prompt-{seed}-{score}", base, seed=seed, fingerprint=fingerprint)
    params = tracking.training_params(TASK, base.spec, base.fingerprint, {"n_tokens": 4, "lr": 0.3}, "dv-test")
    run = tracking.TrainingRun(TASK, params)
    run.finish(prompt_dir, {"test/accuracy": score}, {"zero_shot": {"test/accuracy": baseline}})
    return model_registry.register_prompt(TASK, prompt_dir, run.run_id, primary_metric="test/accuracy")



def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    """Poll `url` until it answers 200; fail early with the server's log if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a server in its own session (so stop() can end it and its workers by our PID's group)."""
    # the venv's bin first on PATH: `mlflow models serve` execs `uvicorn` by name
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PATH": path, **(env or {})},
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started (its PID), then SIGKILL if it lingers."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
