"""The last bad inputs of a user task's own file, each refused (or reported) in one line that names the file,
the line or row, the field and what was expected: a CSV naming a column twice, a latin-1 CSV, a JSON array or a
gzip file under a .jsonl name, a row without a template/target field, empty rows dropped without a name, a
class missing from a split."""

from __future__ import annotations

import gzip
import json

import pytest
from typer.testing import CliRunner

from ptune.cli import app
from ptune.config import params_from_dict
from ptune.data.catalog import get_task
from ptune.data.sources import read_table
from ptune.data.splits import fetch, prepare
from ptune.data.validation import validate
from ptune.errors import DataError, ValidationFailed
from tests.ptune.data.fakes import TOY_TASK, toy_rows, write_prepared
from tests.ptune.data.fakes import user_rows as _rows

TASK = {"path": "mine.jsonl", "template": "Text: {text}\nLabel:", "target_field": "label",
        "label_words": ["neg", "pos"]}




def _task(project, rows: list[dict], name: str = "mine.jsonl"):
    (project / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = params_from_dict({"tasks": {"mine": {**TASK, "path": name}}, "data": {"min_class_share": 0.0}})
    return get_task("mine", params), params


def _one_line_error(call) -> str:
    with pytest.raises(DataError) as err:
        call()
    assert "\n" not in str(err.value) and err.value.__cause__ is None
    return str(err.value)


def test_csv_with_a_column_named_twice_is_refused(project):
    path = project / "mine.csv"
    path.write_text("text,label,text\nfirst,pos,second\nthird,neg,fourth\n")
    message = _one_line_error(lambda: read_table(path))
    assert message == (f"{path} line 1: column 'text' appears more than once in the header ['text', 'label', "
                       "'text']; expected each column name once (rename or drop the repeat)")


def test_latin1_csv_names_the_line_and_how_to_convert(project):
    path = project / "mine.csv"
    path.write_bytes("text,label\nplain,pos\nalso plain,neg\ncaf\u00e9 cr\u00e8me,pos\n".encode("latin-1"))
    message = _one_line_error(lambda: read_table(path))
    assert message == (f"{path} line 4: the file is not UTF-8 (byte 0xe9 at column 4); convert it, e.g. "
                       f"`iconv -f latin1 -t utf-8 {path} > utf8.csv`")


def test_json_array_in_a_jsonl_file_is_named(project):
    path = project / "mine.jsonl"
    path.write_text("\n" + json.dumps(_rows(3), indent=1))
    message = _one_line_error(lambda: read_table(path))
    assert message.startswith(f"{path} line 2: is a single JSON array, expected one JSON object per line")


def test_gzip_file_named_jsonl_is_refused_with_how_to_decompress(project):
    path = project / "mine.jsonl"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in _rows(3)).encode()))
    message = _one_line_error(lambda: read_table(path))
    assert message.startswith(f"{path}: is gzip-compressed, expected plain UTF-8 JSONL text")
    assert f"gunzip -c {path} > mine-plain.jsonl" in message


def test_bad_json_line_names_line_and_column_without_traceback(project):
    path = project / "mine.jsonl"
    path.write_text('{"text": "a", "label": "pos"}\n{"text": "b", "label": \n')
    assert _one_line_error(lambda: read_table(path)) == (
        f"{path} line 2: not valid JSON (Expecting value at column 24); expected one JSON object per line")


def test_line_separator_inside_a_value_is_not_a_new_line(project):
    path = project / "mine.jsonl"
    path.write_text(json.dumps({"text": "a\u2028b", "label": "pos"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_table(path) == [{"text": "a\u2028b", "label": "pos"}]


def test_missing_field_says_which_field_is_missing(project):
    rows = _rows(10)
    del rows[4]["label"]
    spec, params = _task(project, rows)
    fetch(spec)
    message = _one_line_error(lambda: prepare(spec, params.data))
    assert message == (f"{project / 'data/raw/mine.jsonl'}: 1 rows cannot be formatted for task 'mine' "
                       "(expected columns ['text', 'label']): row 5: field 'label' is missing")


def test_empty_rows_are_named_in_the_dropped_report(project):
    rows = _rows(30) + [{"text": "", "label": "neg"}, {"text": "   ", "label": "pos"}]
    spec, params = _task(project, rows)
    fetch(spec)
    prepare(spec, params.data)
    info = json.loads((project / "data/prepared/mine/data_version.json").read_text())["dropped"]
    assert [line.split(" (id ")[0] for line in info["rows"]] == ["row 31", "row 32"]
    assert all(line.startswith("row 3") and ": empty: empty text" in line and "(id mine-" in line
               for line in info["rows"])
    params_file = project / "params.yaml"
    params_file.write_text(json.dumps({"tasks": {"mine": TASK}, "data": {"min_class_share": 0.0}}))
    out = CliRunner().invoke(app, ["prepare", "mine", "--params", str(params_file)]).output
    assert "dropped 2 of 32 raw rows: empty=2" in out
    assert f"  dropped: {info['rows'][0]}" in out and f"  dropped: {info['rows'][1]}" in out
    with pytest.raises(ValidationFailed):  # min_class_share 0 passes; make it fail to check the report anyway
        validate(spec, params_from_dict({"tasks": {"mine": TASK}, "data": {"min_class_share": 0.9}}).data)
    report = (project / "data/validation/mine/report.md").read_text()
    assert f"- dropped: {info['rows'][0]}" in report and f"- dropped: {info['rows'][1]}" in report


def test_a_class_without_rows_in_a_split_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path))
    validation = [row for row in toy_rows("validation", 8, 100) if row["target"] == "neg"]
    write_prepared(tmp_path, {"train": toy_rows("train", 20), "validation": validation,
                              "test": toy_rows("test", 6, 200)})
    params = params_from_dict({"tasks": {"toy": TOY_TASK}, "data": {"min_class_share": 0.01}})
    with pytest.raises(ValidationFailed) as err:
        validate(get_task("toy", params), params.data)
    line = next(line for line in str(err.value).splitlines() if "a class has no rows" in line)
    assert line.startswith("  - validation: ")
    assert "no rows of class 'pos' (classes seen: 'neg')" in line and "None" not in line
