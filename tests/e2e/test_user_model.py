"""A user's own model, as docs/models.md "Your own model" describes it: a hub id already in the Hugging Face cache
(read offline) and a local directory of safetensors, each with its own tokenizer and chat template, run the whole
by-hand journey; the chat template reaches the chat-zero-shot baseline, and a directory holding only a pickle is
refused before any unpickling."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import yaml
from click.testing import Result as CliResult

from ptune.model.base import load_base_model
from tests.support import build_project, project_env_vars, run_cli, use_project
from tests.tiny_models import build_causal

CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")
REVISION = "0123456789abcdef0123456789abcdef01234567"


def with_chat_template(model_dir: Path) -> Path:
    """The tokenizer saved with a chat template, as an instruction-tuned checkpoint ships it."""
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    config_path.write_text(json.dumps(config))
    return model_dir


def hub_cache_entry(cache: Path, repo_id: str, source: Path) -> Path:
    """The layout `hf download` leaves: models--org--name/{refs/main, snapshots/<revision>/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    shutil.copytree(source, repo / "snapshots" / REVISION)
    return repo


def model_info(spec: str) -> CliResult:
    from typer.testing import CliRunner

    from ptune.cli import app

    return CliRunner().invoke(app, ["model-info", spec])


def set_model(root: Path, spec: str) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"] = spec
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory) -> Path:
    return with_chat_template(build_causal(tmp_path_factory.mktemp("acme-tiny-chat"), seed=3))


def ptune_process(root: Path, hub_cache: Path, *args: str) -> str:
    """`python -m ptune.cli ARGS` in a fresh process, as a user's shell runs it: huggingface_hub reads HF_HUB_CACHE
    once, at import."""
    env = {**os.environ, **project_env_vars(root), "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "ptune.cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"ptune {' '.join(args)}: {done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.parametrize("where", ["hub cache", "local directory"])
def test_a_users_model_runs_the_journey_with_its_own_chat_template(where, chat_model_dir, tmp_path, monkeypatch):
    root = use_project(build_project(tmp_path / "project", chat_model_dir, n_rows=40), monkeypatch)
    spec = "acme/tiny-chat" if where == "hub cache" else str(chat_model_dir)
    expected = load_base_model(chat_model_dir).fingerprint
    if where == "hub cache":
        hub_cache_entry(tmp_path / "hf-cache", spec, chat_model_dir)
        info = ptune_process(root, tmp_path / "hf-cache", "model-info", spec)  # HF_HUB_CACHE, as a shell sets it
        # in this process huggingface_hub has read HF_HUB_CACHE already: point it at the same folder
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    else:
        info = model_info(spec).stdout
    assert f"fingerprint: {expected}" in info and f"spec: {spec}" in info
    set_model(root, spec)
    for step in ("fetch", "prepare"):
        run_cli(root, step, "toy")
    run_cli(root, "train", "toy", "--steps", "2", "--no-track")
    run_cli(root, "report", "toy")

    prompt = json.loads((root / "outputs" / "toy" / "prompt" / "prompt.json").read_text())
    assert prompt["base_model"]["spec"] == spec and prompt["base_model"]["fingerprint"] == expected
    report = json.loads((root / "metrics" / "toy.json").read_text())
    assert "baseline/chat_zero_shot/test/accuracy" in report  # the template was found and used


def test_a_hub_id_missing_from_the_cache_offline_is_one_line_naming_the_remedy(tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1",
           "PTUNE_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "ptune.cli", "model-info", "acme/not-downloaded"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and done.stdout == ""
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert "acme/not-downloaded" in message and "HF_HUB_OFFLINE" in message
