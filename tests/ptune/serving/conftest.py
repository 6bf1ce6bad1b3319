"""The serving tests' servers: champions of four tasks in a real MLflow SQLite registry, served on
127.0.0.1 in-process (one per test module); and @challenger of a two-field task beside a one-field one."""

from __future__ import annotations

import dataclasses

import pytest

from ptune.config import Params
from ptune.model.base import load_base_model
from ptune.serving.app import create_app
from ptune.serving.server import build_service
from ptune.serving.settings import ServeSettings
from tests.ptune.serving.helpers import publish, running, store_env

TASKS = {"rotten_tomatoes": 3, "intent": 6, "xsum": 2, "strategyqa": 4}  # task -> prompt tokens
SETTINGS = ServeSettings(max_inputs=8, max_input_chars=200, max_body_bytes=1500, poll_seconds=0.2,
                         max_batch_size=16, max_wait_ms=5)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_causal_dir):
    """(service, base URL, registry dir, base model) of a server on the champions; the registry env stays set."""
    tmp = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in store_env(tmp).items():
            mp.setenv(key, value)
        base = load_base_model(str(tiny_causal_dir))
        for seed, (task, n) in enumerate(TASKS.items()):
            publish(tmp, base, task, n, seed)
        service = build_service(Params(model=str(tiny_causal_dir)), list(TASKS), SETTINGS)
        with running(create_app(service)) as url:
            yield service, url, tmp, base


FIELD_TASKS = {"boolq_offline": 3, "rotten_tomatoes": 2}  # question + passage; text
BASELINE = {"baseline/best/test/accuracy": 0.77}  # the best hand-written prompt's test accuracy, as a report records it


@pytest.fixture(scope="module")
def served_fields(tmp_path_factory, tiny_causal_dir):
    """(service, base URL) of a server on @challenger of a two-field task (boolq_offline) and rotten_tomatoes,
    each registered with its test accuracy (helpers.save_prompt) and the best baseline's."""
    tmp = tmp_path_factory.mktemp("serve-fields")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in store_env(tmp).items():
            mp.setenv(key, value)
        base = load_base_model(str(tiny_causal_dir))
        for seed, (task, n) in enumerate(FIELD_TASKS.items(), start=32):
            publish(tmp, base, task, n, seed, alias="challenger", report=BASELINE)
        settings = dataclasses.replace(SETTINGS, alias="challenger", poll_seconds=0)
        service = build_service(Params(model=str(tiny_causal_dir)), list(FIELD_TASKS), settings)
        with running(create_app(service)) as url:
            yield service, url
