"""The serving tests' servers: champions of four tasks in a real MLflow SQLite registry, served on
127.0.0.1 in-process (one per test module); and @challenger of a two-field task beside a one-field one."""

from __future__ import annotations

import dataclasses

import pytest

from ptune.serving.settings import ServeSettings
from tests.ptune.serving.helpers import serving

TASKS = {"rotten_tomatoes": 3, "intent": 6, "xsum": 2, "strategyqa": 4}  # task -> prompt tokens
SETTINGS = ServeSettings(max_inputs=8, max_input_chars=200, max_body_bytes=1500, poll_seconds=0.2,
                         max_batch_size=16, max_wait_ms=5)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_causal_dir):
    """(service, base URL, registry dir, base model) of a server on the champions; the registry env stays set."""
    tmp = tmp_path_factory.mktemp("serve")
    with serving(tmp, tiny_causal_dir, TASKS, SETTINGS) as (service, url, base):
        yield service, url, tmp, base


FIELD_TASKS = {"boolq_offline": 3, "rotten_tomatoes": 2}  # question + passage; text
BASELINE = {"baseline/best/test/accuracy": 0.77}  # the best hand-written prompt's test accuracy, as a report records it


@pytest.fixture(scope="module")
def served_fields(tmp_path_factory, tiny_causal_dir):
    """(service, base URL) of a server on @challenger of a two-field task (boolq_offline) and rotten_tomatoes,
    each registered with its test accuracy (helpers.save_prompt) and the best baseline's."""
    settings = dataclasses.replace(SETTINGS, alias="challenger", poll_seconds=0)
    with serving(tmp_path_factory.mktemp("serve-fields"), tiny_causal_dir, FIELD_TASKS, settings, seed=32,
                 alias="challenger", report=BASELINE) as (service, url, _):
        yield service, url
