"""The registered pyfunc: loads in a fresh process, predicts like the in-process prompt, serves over REST,
and refuses a prompt made for another base model or tampered with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from ptune.data.catalog import get_task
from ptune.errors import ArtifactError
from ptune.evaluation.scoring import evaluate
from ptune.model import artifacts
from ptune.model.precision import inference_precision
from ptune.registry.promotion import promote_if_better
from tests.ptune.registry.helpers import (
    ROWS,
    TASK,
    examples,
    register,
    start,
    stop,
    use_store,
    wait_http,
)
from tests.support import free_port

URI = f"models:/ptune-{TASK}@champion"
PREDICT = """
import json, sys, mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
texts = json.loads(sys.argv[2])
sources = json.loads(sys.argv[3])
print("RESULT", json.dumps([list(model.predict(pd.DataFrame({"text": texts}))),
                            list(model.predict(pd.DataFrame({"source": sources})))]))
"""

@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fresh SQLite tracking/registry store, project dir and PTUNE_HOME under tmp_path."""
    return use_store(tmp_path, monkeypatch)



@pytest.fixture
def champion(store, tiny_causal, tmp_path) -> tuple[list[str], list[str]]:
    """A registered, promoted prompt for the tiny model -> (texts, in-process predicted labels)."""
    reg = register(tmp_path, tiny_causal, score=0.9, seed=3)
    promote_if_better(TASK, reg.version, evaluator=lambda *a: pytest.fail("no champion yet"))
    weight, _ = artifacts.load_prompt(tmp_path / "prompt-3-0.9")
    expected = evaluate(tiny_causal, get_task(TASK), examples(), weight, split="test", progress=False).predictions
    return [text for text, _ in ROWS], expected


def test_champion_predicts_like_the_in_process_prompt_in_a_fresh_process_and_over_rest(champion, tmp_path):
    """`load_model(models:/...@champion)` in a subprocess, and `mlflow models serve` answering POST /invocations
    (the server boots while the subprocess predicts; both must give the in-process labels)."""
    texts, expected = champion
    port = free_port()
    serve = [sys.executable, "-m", "mlflow", "models", "serve", "-m", URI, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)]
    server = start(serve, tmp_path / "serve.log", {"OMP_NUM_THREADS": "1"})
    try:
        sources = [e.source for e in examples()]
        proc = subprocess.run([sys.executable, "-c", PREDICT, URI, json.dumps(texts), json.dumps(sources)],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        by_columns, by_source = json.loads(proc.stdout.split("RESULT", 1)[1])
        assert by_columns == expected and by_source == expected and set(expected) <= {"negative", "positive"}

        wait_http(f"http://127.0.0.1:{port}/ping", server, tmp_path / "serve.log", timeout=150)
        body = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert json.loads(resp.read())["predictions"] == expected
    finally:
        stop(server)


def test_pyfunc_refuses_a_prompt_for_another_base_model(store, tiny_causal, tmp_path):
    reg = register(tmp_path, tiny_causal, score=0.9, fingerprint="f" * 32)
    with pytest.raises(ArtifactError, match=r"refusing to load .* fingerprint ffff"):
        mlflow.pyfunc.load_model(reg.model_uri)


def test_pyfunc_refuses_a_tampered_prompt(store, tiny_causal, tmp_path):
    reg = register(tmp_path, tiny_causal, score=0.9)
    source = MlflowClient().get_model_version(reg.name, reg.version).source
    root = Path(MlflowClient().get_logged_model(source.removeprefix("models:/")).artifact_location.removeprefix("file://"))
    tensor_file = next(root.glob("artifacts/*/prompt.safetensors"))
    data = bytearray(tensor_file.read_bytes())
    data[-1] ^= 0xFF
    tensor_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        mlflow.pyfunc.load_model(reg.model_uri)


def test_pyfunc_computes_in_the_projects_evaluate_precision(store, tiny_causal, tmp_path):
    """evaluate.precision bf16 in the project's params.yaml: the loaded model holds its weights in bf16 and predicts
    what evaluation computes in that precision (the tiny model stays fp32 under `auto`: the other tests)."""
    (store / "project" / "params.yaml").write_text("evaluate: {precision: bf16}\n")
    reg = register(tmp_path, tiny_causal, score=0.9, seed=3)
    model = mlflow.pyfunc.load_model(reg.model_uri)
    inner = model.unwrap_python_model()
    assert {p.dtype for p in inner.base.model.parameters()} == {torch.bfloat16}
    weight, _ = artifacts.load_prompt(tmp_path / "prompt-3-0.9")
    with inference_precision(tiny_causal.model, tiny_causal.device, torch.bfloat16):
        result = evaluate(tiny_causal, get_task(TASK), examples(), weight, split="test", progress=False)
    assert list(model.predict(pd.DataFrame({"text": [text for text, _ in ROWS]}))) == list(result.predictions)
