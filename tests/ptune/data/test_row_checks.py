"""What prepare and validate catch on a user task's own file, each with its exact message: non-scalar fields,
conflicting duplicates (both rows named), drops counted per reason with a max share, null-like strings, too few
rows for the splits."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ptune.cli import app
from ptune.config import params_from_dict
from ptune.data.catalog import get_task
from ptune.data.splits import fetch, prepare
from ptune.data.validation import validate
from ptune.errors import DataError, ValidationFailed
from tests.ptune.data.fakes import user_rows as _rows

TASK = {"path": "mine.jsonl", "template": "Text: {text}\nLabel:", "target_field": "label",
        "label_words": ["neg", "pos"], "max_source_tokens": 4}  # sources over 48 chars are too long




def _setup(project, rows, **data):
    (project / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = params_from_dict({"tasks": {"mine": TASK}, "data": {"min_class_share": 0.0, **data}})
    spec = get_task("mine", params)
    fetch(spec)
    return spec, params


def test_non_scalar_template_or_target_fields_are_refused(project):
    rows = _rows(20)
    rows[2]["text"] = {"title": "a dict"}
    rows[5]["label"] = ["pos"]
    spec, params = _setup(project, rows)
    with pytest.raises(DataError) as err:
        prepare(spec, params.data)
    raw = project / "data/raw/mine.jsonl"
    assert str(err.value) == (
        "task 'mine': 2 non-scalar values:\n"
        f"  - {raw} row 3: field 'text' is a dict ({{'title': 'a dict'}}); expected a string or a number "
        "(template and target fields must be scalars)\n"
        f"  - {raw} row 6: field 'label' is a list (['pos']); expected a string or a number "
        "(template and target fields must be scalars)")


def test_drops_are_counted_per_reason_and_conflicts_name_both_rows(project):
    rows = _rows(20) + [{"text": "sample 1", "label": "pos"},      # row 21: duplicate of row 2
                        {"text": "sample 4", "label": "pos"},      # row 22: conflicts with row 5 (neg)
                        {"text": "", "label": "neg"},              # row 23: empty
                        {"text": "x" * 60, "label": "neg"}]        # row 24: too long
    spec, params = _setup(project, rows)
    counts = prepare(spec, params.data)
    assert sum(counts.values()) == 19  # 24 - 1 duplicate - 2 conflicting (rows 5 and 22) - 1 empty - 1 too long
    info = json.loads((project / "data/prepared/mine/data_version.json").read_text())["dropped"]
    assert info == {"total": 24, "dropped": 5, "by_reason": {"empty": 1, "too_long": 1, "duplicate": 1,
                                                                  "conflicting": 2},
                    "conflicts": ["rows 5 and 22: same source 'Text: sample 4\\nLabel:', targets 'neg' vs 'pos'"],
                    "rows": ["row 23 (id mine-b08c8add0375): empty: empty text",
                             "row 24 (id mine-ff4cdd9087ae): too_long: source of 73 chars, over 48"]}
    out = CliRunner().invoke(app, ["prepare", "mine", "--params", str(_params_file(project))]).output
    assert "dropped 5 of 24 raw rows: empty=1, too_long=1, duplicate=1, conflicting=2" in out
    assert "  conflicting targets: rows 5 and 22: same source 'Text: sample 4\\nLabel:', targets 'neg' vs 'pos'" in out


def _params_file(project):
    path = project / "params.yaml"
    path.write_text(json.dumps({"tasks": {"mine": TASK}, "data": {"min_class_share": 0.0}}))
    return path


def test_dropping_more_than_the_max_share_fails_the_task(project):
    rows = _rows(10) + [{"text": "", "label": "neg"}] * 4  # 4 of 14 empty: 29%
    spec, params = _setup(project, rows, max_dropped_share=0.25)
    with pytest.raises(DataError) as err:
        prepare(spec, params.data)
    assert str(err.value) == (f"{project / 'data/raw/mine.jsonl'}: task 'mine': dropped 4 of 14 rows: empty=4, "
                              "too_long=0, duplicate=0, conflicting=0 (29%), over data.max_dropped_share=0.25"
                              + "".join(f"\n  - dropped: row {n} (id mine-b08c8add0375): empty: empty text"
                                        for n in (11, 12, 13, 14)))
    spec, params = _setup(project, rows, max_dropped_share=0.3)
    assert sum(prepare(spec, params.data).values()) == 10


def test_too_few_rows_for_the_splits_names_the_minimum(project):
    spec, params = _setup(project, _rows(2))
    with pytest.raises(DataError) as err:
        prepare(spec, params.data)
    assert str(err.value) == (f"{project / 'data/raw/mine.jsonl'}: too few rows for task 'mine': 2 usable of 2 "
                              "(0 dropped) leave split train empty; at least 3 usable rows are needed "
                              "(1 each for train, validation and test)")
    spec, params = _setup(project, _rows(3))
    assert prepare(spec, params.data) == {"train": 1, "validation": 1, "test": 1}


@pytest.mark.parametrize("word", ["nan", "None", "null"])
def test_null_like_strings_in_text_fields_are_flagged(project, word):
    rows = _rows(30)
    rows[0]["text"] = word
    spec, params = _setup(project, rows)
    prepare(spec, params.data)
    with pytest.raises(ValidationFailed) as err:
        validate(spec, params.data)
    lines = [line for line in str(err.value).splitlines() if "null-like" in line]
    assert len(lines) == 1 and "null-like text ('nan', 'None', 'null') in fields.text" in lines[0]
    assert f"fields.text={word!r}" in lines[0]
