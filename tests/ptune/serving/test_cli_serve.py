"""`ptune serve` as a process: reads params.yaml (base model, run_tasks), serves @champion of each task
on 127.0.0.1, stops on SIGTERM. Settings are validated with every problem listed."""

from __future__ import annotations

import sys

import httpx
import pytest
import yaml

from ptune.errors import ConfigError
from ptune.serving.settings import ServeSettings
from tests.ptune.registry.helpers import start, stop, wait_http
from tests.ptune.serving.helpers import store_env
from tests.support import free_port


def test_serve_command_serves_the_run_tasks(served, tiny_causal_dir):
    _, _, tmp, _ = served
    params = tmp / "project" / "params.yaml"
    params.write_text(yaml.safe_dump({"model": str(tiny_causal_dir), "run_tasks": ["rotten_tomatoes", "intent"]}))
    port, log = free_port(), tmp / "serve.log"
    proc = start([sys.executable, "-m", "ptune.cli", "serve", "--params", str(params), "--port", str(port),
                  "--poll-seconds", "0"], log, env={**store_env(tmp), "PTUNE_THREADS": "1"})
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, log)
        tasks = httpx.get(f"http://127.0.0.1:{port}/v1/tasks").json()
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"task": "intent", "inputs": ["play a song"]})
    finally:
        stop(proc)
    assert [t["task"] for t in tasks] == ["intent", "rotten_tomatoes"]
    assert resp.status_code == 200 and resp.json()["predictions"][0]["version"] == "1"
    assert "reachable from other machines" not in log.read_text()  # loopback: no warning


def test_settings_list_every_problem():
    with pytest.raises(ConfigError) as err:
        ServeSettings(port=70000, max_batch_size=0, max_wait_ms=-1, alias=" ")
    text = str(err.value)
    for name in ("--port", "--max-batch-size", "--max-wait-ms", "--alias"):
        assert name in text
    assert not ServeSettings(host="0.0.0.0").loopback and ServeSettings().loopback
