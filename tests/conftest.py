"""Shared fixtures: offline switches, tiny local models, a temp project dir."""

from __future__ import annotations

import os

for _key, _value in {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
    "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1", "TOKENIZERS_PARALLELISM": "false", "GX_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(_key, _value)

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer  # noqa: E402

from ptune.model.base import BaseModel, from_objects  # noqa: E402
from tests.tiny_models import build_causal, build_t5  # noqa: E402

torch.set_num_threads(1)  # tiny models: one thread is much faster than two on 2 cores


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory):
    return build_causal(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory):
    return build_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture
def tiny_causal(tiny_causal_dir) -> BaseModel:
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir, dtype=torch.float32)
    return from_objects(model, AutoTokenizer.from_pretrained(tiny_causal_dir), str(tiny_causal_dir))


@pytest.fixture
def tiny_causal_nobos(tiny_causal_dir) -> BaseModel:
    """The tiny causal model with a tokenizer that adds no BOS (as SmolLM2's): the prompt goes first."""
    from tokenizers import processors

    tok = AutoTokenizer.from_pretrained(tiny_causal_dir)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", special_tokens=[])
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir, dtype=torch.float32)
    return from_objects(model, tok, f"{tiny_causal_dir}-nobos")


@pytest.fixture
def tiny_t5(tiny_t5_dir) -> BaseModel:
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir, dtype=torch.float32)
    return from_objects(model, AutoTokenizer.from_pretrained(tiny_t5_dir), str(tiny_t5_dir))


@pytest.fixture(params=["causal", "t5"])
def tiny_base(request) -> BaseModel:
    """Both architectures: tests using this run once for a causal LM and once for a T5."""
    return request.getfixturevalue("tiny_causal" if request.param == "causal" else "tiny_t5")


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One Prefect test API for the session (tests/tasks and tests/flows share it; see tests/flows/harness.py)."""
    from tests.flows.harness import harness

    with harness(tmp_path_factory.mktemp("prefect-home")):
        yield


@pytest.fixture(scope="module")
def toy_project(tmp_path_factory, tiny_causal_dir, prefect_harness):
    """A project dir with params.yaml + toy user tasks (tests/support.py); ptune paths and MLflow point at
    it for the module. Shared by tests/tasks and tests/flows."""
    from tests.support import build_project, project_env

    root = build_project(tmp_path_factory.mktemp("project"), tiny_causal_dir)
    with project_env(root):
        yield root
