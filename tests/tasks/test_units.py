"""Task helpers tested without Prefect: cache keys, retry conditions, artifact keys."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from prefect.states import Completed, Failed

from ptune.config import DataConfig, Params
from ptune.errors import ConfigError, DataError, RegistryError
from ptune.pipeline.stages import TaskRun
from tasks.data import data_key, prepare_cache_key
from tasks.policies import retry_on, retry_unless
from tasks.training import artifact_key
from tests.support import build_project, project_env


def test_data_key_changes_with_params_and_files(tmp_path, tiny_causal_dir):
    from ptune.config import load_params

    root = build_project(tmp_path, tiny_causal_dir)
    with project_env(root):
        params = load_params(root / "params.yaml")
        toy, toy_bad = TaskRun.build("toy", params), TaskRun.build("toy_bad", params)
        raw = [root / "data" / "toy.jsonl"]
        key = data_key("prepare", toy, raw)
        assert key == data_key("prepare", toy, raw)
        other = dataclasses.replace(params, data=DataConfig(seed=1, max_train=0, max_validation=0, max_test=0))
        assert data_key("prepare", TaskRun.build("toy", other), raw) != key
        raw[0].write_text(raw[0].read_text() + '{"text": "one more", "label": "good"}\n')
        assert data_key("prepare", toy, raw) != key
        assert data_key("prepare", toy_bad, raw) != data_key("prepare", toy, raw)
        ctx = SimpleNamespace(task=SimpleNamespace(name="prepare_split"))
        assert prepare_cache_key(ctx, {"run": toy}) is None  # nothing prepared yet


def _failed(exc: BaseException):
    return Failed(data=exc)


def test_retry_conditions():
    transient, permanent = retry_on(), retry_unless()
    assert transient(None, None, _failed(OSError("reset"))) and transient(None, None, _failed(RegistryError("down")))
    assert not transient(None, None, _failed(DataError("bad row")))
    assert permanent(None, None, _failed(RuntimeError("CUDA error: out of memory")))
    assert not permanent(None, None, _failed(ConfigError("bad lr")))
    assert not transient(None, None, Completed())


def test_artifact_keys_are_valid():
    assert artifact_key("train-progress", "Toy_Bad.v2") == "train-progress-toy-bad-v2"


def test_params_default_constructible():
    assert Params().train.max_steps > 0
