"""An input without its target formats as the training row does: `format_fields` (the server's object inputs,
`ptune predict`, the MLflow pyfunc) gives the source text `prepare` gives, for every built-in task whose
formatter can take its input fields alone."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from ptune.data.catalog import builtin_tasks
from ptune.data.spec import format_fields, format_input
from ptune.errors import DataError
from ptune.registry.pyfunc_model import _sources

TASKS = builtin_tasks()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_fields_alone_format_every_task(name):
    spec = TASKS[name]
    fields = {col: "1" if col.endswith("_index") else f"<{col}>" for col in spec.input_columns}  # wsc: a position
    source = format_fields(spec, fields)
    lists = {"entities"}  # record's entities are a list, joined by the formatter
    assert all(value in source for col, value in fields.items() if value != "1" and col not in lists), source


def test_a_parsed_target_does_not_change_the_source():
    spec = TASKS["boolq_offline"]  # its formatter parses the answer ("true"/"false")
    row = {"passage": "The sky is blue.", "question": "is the sky blue", "answer": "true"}
    fields = {k: v for k, v in row.items() if k != "answer"}
    assert format_fields(spec, fields) == spec.formatter(row)[0] == spec.formatter({**row, "answer": "false"})[0]
    assert _sources(spec, pd.DataFrame([fields])) == [spec.formatter(row)[0]]  # the pyfunc's path


def test_a_formatter_that_takes_no_stand_in_says_so_in_one_line():
    spec = dataclasses.replace(TASKS["boolq_offline"], formatter=lambda row: (row["answer"] + 1, ""))
    with pytest.raises(DataError) as err:
        format_input(spec, "a passage")
    assert str(err.value).startswith("task 'boolq_offline' needs the fields ['question', 'passage']")
    assert str(err.value).endswith("pass the formatted source as raw input") and "\n" not in str(err.value)
