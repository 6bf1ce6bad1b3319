"""Helpers for the serving tests: tiny prompts published in a real MLflow SQLite registry, and a server
run in-process (uvicorn in a thread on a free loopback port)."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import uvicorn

from ptune.config import Params
from ptune.data.catalog import get_task
from ptune.model import artifacts
from ptune.model.artifacts import PromptMeta
from ptune.model.base import BaseModel, load_base_model
from ptune.registry import model_registry
from ptune.serving.app import create_app
from ptune.serving.server import build_service
from tests.support import free_port

# Scores of one row computed in different batches (mixed tasks, sizes, HTTP vs in-process) are equal up to fp32
# reduction order: a summed log-likelihood near -90 moved by 1.5e-5 on an AMD EPYC (T5), so rtol 1e-6 (~10 ulp)
# beside atol 1e-5, both far below any real difference.
SCORE_TOL = {"atol": 1e-5, "rtol": 1e-6}


def store_env(tmp: Path) -> dict[str, str]:
    """Environment of an isolated tracking/registry store and project under `tmp`."""
    (tmp / "project").mkdir(exist_ok=True)
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlruns.db'}", "PTUNE_PROJECT_DIR": str(tmp / "project"),
            "PTUNE_HOME": str(tmp / "home"), "MLFLOW_DISABLE_TELEMETRY": "true"}


def save_prompt(tmp: Path, base: BaseModel, task: str, n_tokens: int, seed: int,
                fingerprint: str | None = None) -> Path:
    weight = torch.randn(n_tokens, base.hidden_size, generator=torch.Generator().manual_seed(seed)) * 0.5  # (P, d)
    meta = PromptMeta(task=task, base_spec=base.spec, base_fingerprint=fingerprint or base.fingerprint,
                      data_version="dv-test", metrics={"test/accuracy": 0.5 + seed / 100})
    return artifacts.save_prompt(tmp / f"prompt-{task}-{seed}", weight, meta)


def publish(tmp: Path, base: BaseModel, task: str, n_tokens: int, seed: int, alias: str = "champion",
            fingerprint: str | None = None, report: dict[str, float] | None = None) -> str:
    """Register a prompt for `task` (ptune.registry; `report`: its report's test and baseline metrics) and
    point `alias` at it; returns the version."""
    prompt_dir = save_prompt(tmp, base, task, n_tokens, seed, fingerprint)
    version = model_registry.register_dir(prompt_dir, get_task(task), report=report).version
    model_registry.set_alias(task, alias, version)
    return version


@contextmanager
def running(app) -> Iterator[str]:
    """Serve `app` on 127.0.0.1:<free port> in a thread; yields the base URL, stops the server after."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline or not thread.is_alive():
                raise AssertionError("server did not start") from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def serving(tmp: Path, model_dir: Path, tasks: dict[str, int], settings, seed: int = 0,
            **publish_options: Any) -> Iterator[tuple[Any, str, BaseModel]]:
    """A live server on 127.0.0.1 over a fresh registry in `tmp`: each task of `tasks` (name -> prompt tokens)
    published (seeds from `seed`; `publish_options` such as alias and report) -> (service, URL, base model).
    The registry's environment stays set while the server runs."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in store_env(tmp).items():
            mp.setenv(key, value)
        base = load_base_model(str(model_dir))
        for offset, (task, n) in enumerate(tasks.items()):
            publish(tmp, base, task, n, seed + offset, **publish_options)
        service = build_service(Params(model=str(model_dir)), list(tasks), settings)
        with running(create_app(service)) as url:
            yield service, url, base
