"""What one served input is, and the source text the model reads for it.

An input is a plain string (the task's first input column, as `ptune predict` takes it, or with `raw` the
formatted source) or an object with every one of the task's input fields (`TaskSpec.input_columns`). An
object is formatted by the task's own formatter, as `prepare` formats a training row: the fields given, and
the target column, which the source text never depends on, set to the first of a few stand-in values the
formatter accepts (some formatters parse the target: "true"/"false", a label index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ptune.data.spec import TaskSpec, format_fields, format_input

Fields = Mapping[str, str]


def source_text(spec: TaskSpec, text: str | Fields, raw: bool) -> str:
    """The source the model reads: `text` itself when raw, the first column filled by a string, or an object's fields."""
    if isinstance(text, str):
        return text if raw else format_input(spec, text)
    return format_fields(spec, text)


def field_problems(spec: TaskSpec, text: str | Fields, raw: bool, loc: Sequence[str | int]) -> list[dict]:
    """422 details, one per problem of an object input at `loc`: a missing or unknown field, or raw with an
    object. Each names the field and the fields expected, never the text given."""
    if isinstance(text, str):
        return []
    expected, at = list(spec.input_columns), [str(part) for part in loc if part != "body"]
    if raw:
        return [_problem(loc, at, "raw takes the formatted source as a string, not an object of fields", "raw_object")]
    found = [_problem([*loc, name], [*at, name], f"missing; task {spec.name!r} expects the fields {expected}",
                      "missing_field") for name in expected if name not in text]
    return found + [_problem([*loc, name], [*at, name], f"unknown field; task {spec.name!r} expects the fields "
                             f"{expected}", "unknown_field") for name in text if name not in expected]


def _problem(loc: Sequence[str | int], at: Sequence[str], what: str, kind: str) -> dict:
    field = ".".join(at)
    return {"loc": [str(part) for part in loc], "field": field, "msg": f"{field}: {what}", "type": kind}
