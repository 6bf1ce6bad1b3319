"""Every task shows the input template its formatter fills (the model card's "Input template"), never the
description of its source."""

from __future__ import annotations

import pytest

from ptune.data.catalog import builtin_tasks
from ptune.data.spec import input_template

TASKS = builtin_tasks()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_builtin_task_has_an_input_template(name):
    spec = TASKS[name]
    template = input_template(spec)
    assert any("{" + col + "}" in template for col in spec.input_columns), template
    assert spec.description not in template and spec.source.describe() not in template


def test_the_template_of_a_known_task():
    assert input_template(TASKS["rotten_tomatoes"]) == "Review: {text}\nSentiment:"
