"""`ptune validate`: a good dataset passes; a corpus of broken datasets is each rejected with a clear message."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ptune.cli import app
from tests.ptune.data.fakes import TOY_TASK, toy_rows, write_prepared


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path))
    params = {"run_tasks": ["toy"], "data": {"min_class_share": 0.1}, "tasks": {"toy": TOY_TASK}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def good() -> dict[str, list[dict]]:
    return {"train": toy_rows("train", 40), "validation": toy_rows("validation", 10),
            "test": toy_rows("test", 10)}


def run_validate(project: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", "toy", "--params", str(project / "params.yaml")])
    return result.exit_code, result.output


def test_good_data_passes_and_writes_reports(project) -> None:
    write_prepared(project, good())
    code, output = run_validate(project)
    assert code == 0, output
    assert "validation passed: toy train=40, validation=10, test=10" in output
    out = project / "data/validation/toy"
    results = json.loads((out / "gx_results.json").read_text())
    assert set(results) == {"train", "validation", "test"} and all(r["success"] for r in results.values())
    assert "PASSED" in (out / "report.md").read_text() and "<table>" in (out / "report.html").read_text()


def _set(split: str, index: int, key: str, value) -> Callable[[dict], None]:
    def mutate(splits: dict) -> None:
        if key.startswith("fields."):
            splits[split][index]["fields"][key[7:]] = value
        else:
            splits[split][index][key] = value
    return mutate


def _leak(splits: dict) -> None:
    splits["test"][2]["source"] = splits["train"][5]["source"]


def _one_class(splits: dict) -> None:
    for row in splits["train"]:
        row["target"] = row["fields"]["label"] = "pos"


def _rare_class(splits: dict) -> None:
    for row in splits["train"][:-1]:
        row["target"] = "pos"
    splits["train"][-1]["target"] = "neg"  # 1 of 40 = 0.025 < min_class_share 0.1


def _dup_ids(splits: dict) -> None:
    splits["validation"][3]["id"] = splits["validation"][1]["id"]


def _rename_column(splits: dict) -> None:
    for row in splits["train"]:
        row["text"] = row.pop("source")


def _drop_field(splits: dict) -> None:
    for row in splits["validation"]:
        del row["fields"]["text"]


BAD_JSON = ("bad json", b'{"id": "x", "source": ')
BAD_UTF8 = ("bad utf8", b'{"id": "x", "source": "caf\xe9", "target": "pos", "fields": {}}')

# name -> (mutation of good rows | (split, raw bytes appended/replacing), expected message parts)
CORPUS: dict[str, tuple] = {
    "null target": (_set("train", 3, "target", None), ["train: null target", "train row 4 target=None"]),
    "empty source": (_set("test", 0, "source", "  "), ["test: empty source", "test row 1 source='  '"]),
    "null field": (_set("train", 7, "fields.text", None), ["train: null fields.text", "row 8"]),
    "unknown label": (_set("validation", 4, "target", "meh"),
                      ["validation: unknown label (allowed: neg, pos)", "1 of 10 rows", "target='meh'"]),
    "duplicate ids": (_dup_ids, ["validation: duplicate ids", "2 of 10 rows", "validation row 2 id='toy-validation-1'"]),
    "leakage": (_leak, ["test: leakage: source text of test also in train/validation", "test row 3"]),
    "one class only": (_one_class, ["train: a class has no rows in this split", "no rows of class 'neg' (classes seen: 'pos')"]),
    "rare class": (_rare_class, ["train: class under min_class_share=0.1", "train row 40 target='neg'"]),
    "over-long": (_set("train", 1, "source", "x" * 121), ["train: source longer than 120 chars", "train row 2"]),
    "wrong column names": (_rename_column, ["train.jsonl line 1: wrong column names: missing ['source'], "
                                            "unexpected ['text']"]),
    "missing field column": (_drop_field, ["validation: required column fields.text missing"]),
    "invalid utf8": (("validation", BAD_UTF8[1], "append"), ["validation.jsonl line 11: invalid UTF-8 at byte 26"]),
    "not json": (("train", BAD_JSON[1], "append"), ["train.jsonl line 41: not valid JSON"]),
    "empty file": (("test", b"", "replace"), ["test.jsonl: empty file (no rows)"]),
    "missing file": (("test", None, "replace"), ["test.jsonl: file missing"]),
}


def _apply(project: Path, case: tuple) -> None:
    splits = good()
    if callable(case[0]):
        case[0](splits)
        write_prepared(project, splits)
        return
    write_prepared(project, splits)
    split, data, how = case[0]
    path = project / "data/prepared/toy" / f"{split}.jsonl"
    if data is None:
        path.unlink()
    else:
        path.write_bytes(path.read_bytes() + data + b"\n" if how == "append" else data)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_data_is_rejected_with_clear_message(project, name: str) -> None:
    _apply(project, CORPUS[name])
    code, output = run_validate(project)
    assert code != 0, output
    assert "validation failed: task 'toy'" in output
    for part in CORPUS[name][1]:
        assert part in output, f"{name}: expected {part!r} in:\n{output}"
    assert "Traceback" not in output
    assert (project / "data/validation/toy/report.md").read_text().count("FAIL") >= 1


def test_library_raises_validation_failed(project) -> None:
    from ptune.config import load_params
    from ptune.data.catalog import get_task
    from ptune.data.validation import validate
    from ptune.errors import ValidationFailed

    splits = good()
    _leak(splits)
    write_prepared(project, splits)
    with pytest.raises(ValidationFailed, match="leakage"):
        params = load_params(project / "params.yaml")
        validate(get_task("toy", params), params.data)
