"""Validate prepared splits with a Great Expectations suite generated from the TaskSpec.

Structural checks GX cannot see (missing/empty file, invalid UTF-8, not JSON, wrong column names) run first
on the raw bytes; then one GX Core 1.x suite per split checks: required columns, non-null / non-empty values,
label set, length bounds, unique ids and sources, no train->validation/test leakage, class shares.
great_expectations is imported lazily here only (ptune/ never imports it at module import time).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ptune.config import DataConfig
from ptune.data.spec import TaskSpec
from ptune.data.splits import SPLITS, dropped_report
from ptune.data.validation_report import Failure, failures_of, write_reports
from ptune.errors import ValidationFailed
from ptune.fileio import sha256_text
from ptune.paths import prepared_dir, validation_dir

ROW_KEYS = ("id", "source", "target", "fields")
MAX_LISTED = 5
BLANK = r"^\s*$"
NULL_WORD = r"(?i)^\s*(?:nan|none|null)\s*$"  # what a dataframe export writes for a missing value


def read_split_bytes(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of one prepared file and every structural problem (file, line, field), without raising."""
    if not path.is_file():
        return [], [f"{path}: file missing (run `ptune prepare`)"]
    lines = path.read_bytes().splitlines()
    if not any(line.strip() for line in lines):
        return [], [f"{path}: empty file (no rows)"]
    rows, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row, problem = _parse_line(line)
        if problem:
            problems.append(f"{path} line {number}: {problem}")
        else:
            rows.append(row)
    if len(problems) > MAX_LISTED:
        problems = problems[:MAX_LISTED] + [f"{path}: ... {len(problems) - MAX_LISTED} more structural problems"]
    return rows, problems


def _parse_line(line: bytes) -> tuple[dict[str, Any], str]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {}, f"invalid UTF-8 at byte {exc.start}: {line[max(0, exc.start - 10):exc.start + 10]!r}"
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(row, dict):
        return {}, f"expected a JSON object with keys {list(ROW_KEYS)}, got {type(row).__name__}"
    missing, extra = [k for k in ROW_KEYS if k not in row], sorted(set(row) - set(ROW_KEYS))
    if missing or extra:
        return {}, f"wrong column names: missing {missing}, unexpected {extra} (expected {list(ROW_KEYS)})"
    if not isinstance(row["fields"], dict):
        return {}, f"field 'fields' must be an object, got {type(row['fields']).__name__}"
    return row, ""


def _cell(value: Any) -> Any:
    """Flatten a field value for GX: None stays None, containers become JSON, scalars become str."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


def to_frame(spec: TaskSpec, rows: list[dict[str, Any]]) -> Any:
    """DataFrame indexed by line number: id, source, target, fields.<col>, source_sha, target_share."""
    import pandas as pd

    records = []
    for row in rows:
        record = {key: _cell(row[key]) for key in ("id", "source", "target")}
        record.update({f"fields.{c}": _cell(row["fields"][c]) for c in spec.columns if c in row["fields"]})
        records.append(record)
    frame = pd.DataFrame.from_records(records, index=range(1, len(rows) + 1))
    frame["source_sha"] = frame["source"].map(source_sha)
    if spec.kind == "classification":
        frame["target_share"] = frame["target"].map(frame["target"].value_counts(normalize=True))
    return frame


def source_sha(text: Any) -> str:
    return sha256_text(str(text))[:16]


def build_suite(spec: TaskSpec, split: str, columns: set[str], earlier_sources: set[str],
                min_class_share: float) -> Any:
    """The GX ExpectationSuite `<task>.<split>`, generated from the spec (no per-task hand-written rules)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=f"{spec.name}.{split}")

    def add(expectation: Any, problem: str) -> None:
        expectation.meta = {"problem": problem}
        suite.add_expectation(expectation)

    for column in ("id", "source", "target", *(f"fields.{c}" for c in spec.columns)):
        add(gxe.ExpectColumnToExist(column=column), f"required column {column} missing")
        if column in columns:
            add(gxe.ExpectColumnValuesToNotBeNull(column=column), f"null {column}")
            add(gxe.ExpectColumnValuesToNotMatchRegex(column=column, regex=BLANK), f"empty {column}")
        if column in columns and (column.startswith("fields.") or spec.kind == "generation" and column == "target"):
            add(gxe.ExpectColumnValuesToNotMatchRegex(column=column, regex=NULL_WORD),
                f"null-like text ('nan', 'None', 'null') in {column}")
    add(gxe.ExpectColumnValuesToBeUnique(column="id"), "duplicate ids")
    add(gxe.ExpectColumnValuesToBeUnique(column="source"), "duplicate source texts")
    add(gxe.ExpectColumnValueLengthsToBeBetween(column="source", min_value=1, max_value=spec.max_source_chars),
        f"source longer than {spec.max_source_chars} chars (max_source_tokens={spec.max_source_tokens} x 12)")
    _add_target_rules(add, gxe, spec, min_class_share)
    if earlier_sources:
        add(gxe.ExpectColumnValuesToNotBeInSet(column="source_sha", value_set=sorted(earlier_sources)),
            f"leakage: source text of {split} also in " + ("train" if split == "validation" else "train/validation"))
    return suite


def _add_target_rules(add: Any, gxe: Any, spec: TaskSpec, min_class_share: float) -> None:
    if spec.kind == "generation":
        add(gxe.ExpectColumnValueLengthsToBeBetween(column="target", min_value=1, max_value=spec.max_target_chars),
            f"target longer than {spec.max_target_chars} chars")
        return
    add(gxe.ExpectColumnValuesToBeInSet(column="target", value_set=list(spec.label_words)),
        f"unknown label (allowed: {', '.join(spec.label_words)})")
    if min_class_share > 0:
        add(gxe.ExpectColumnDistinctValuesToContainSet(column="target", value_set=list(spec.label_words)),
            "a class has no rows in this split")
        add(gxe.ExpectColumnValuesToBeBetween(column="target_share", min_value=min_class_share),
            f"class under min_class_share={min_class_share}")


def _run_gx(spec: TaskSpec, frames: Mapping[str, Any], min_class_share: float) -> dict[str, Any]:
    """Run the generated suite on every split in one ephemeral context; results by split."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    datasource = context.data_sources.add_pandas(f"ptune-{spec.name}")
    results, earlier = {}, set()
    for split, frame in frames.items():
        batch = datasource.add_dataframe_asset(split).add_batch_definition_whole_dataframe(split)
        suite = context.suites.add(build_suite(spec, split, set(frame.columns), earlier, min_class_share))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{spec.name}.{split}", data=batch, suite=suite))
        results[split] = definition.run(batch_parameters={"dataframe": frame}, result_format="COMPLETE")
        earlier |= set(frame["source_sha"])
    return results


def validate(spec: TaskSpec, settings: DataConfig) -> dict[str, Any]:
    """Validate every prepared split; write reports under data/validation/<task>/; raise ValidationFailed."""
    parsed = {split: read_split_bytes(prepared_dir(spec.name) / f"{split}.jsonl") for split in SPLITS}
    structural = [problem for _, problems in parsed.values() for problem in problems]
    out = validation_dir(spec.name)
    if structural:
        write_reports(out, spec, {}, {}, [Failure("structure", p, 0, 0, []) for p in structural])
        raise ValidationFailed(f"task {spec.name!r}: prepared data is malformed:\n  - " + "\n  - ".join(structural))
    frames = {split: to_frame(spec, rows) for split, (rows, _) in parsed.items()}
    results = _run_gx(spec, frames, float(settings.min_class_share))
    failures = [f for split in SPLITS for f in failures_of(split, results[split], frames[split])]
    summary = write_reports(out, spec, frames, results, failures, dropped_report(spec.name))
    if failures:
        raise ValidationFailed(f"task {spec.name!r}: {len(failures)} expectations failed "
                               f"(report: {out / 'report.md'}):\n  - " + "\n  - ".join(f.line() for f in failures))
    return summary
