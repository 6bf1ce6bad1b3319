"""Readable offline reports of a validation run: failures with example rows, markdown and self-contained HTML.

GX Data Docs pull CSS/JS from CDNs, so offline they render unstyled; these reports need nothing.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptune.data.row_checks import named_lines
from ptune.data.spec import TaskSpec
from ptune.fileio import atomic_write_bytes

EXAMPLES = 3
SHOWN_COLUMN = {"source_sha": "source", "target_share": "target"}  # computed column -> column shown to people


@dataclass
class Failure:
    """One failed expectation (or structural problem) with counts and a few offending rows."""

    split: str
    problem: str
    unexpected: int
    total: int
    examples: list[str] = field(default_factory=list)
    expectation: str = ""

    def line(self) -> str:
        counts = f": {self.unexpected} of {self.total} rows" if self.total else ""
        what = f" [{self.expectation}]" if self.expectation else ""
        shown = f"; e.g. {'; '.join(self.examples)}" if self.examples else ""
        return f"{self.split}: {self.problem}{what}{counts}{shown}"


def failures_of(split: str, result: Any, frame: Any) -> list[Failure]:
    """Failures of one GX validation result, each with up to EXAMPLES offending rows (row = line number)."""
    failures = []
    for item in result.results:
        if item.success:
            continue
        config, found = item.expectation_config, item.result or {}
        column = config.kwargs.get("column", "")
        name = f"{config.type}({column})"
        examples = _examples(split, frame, column, found.get("unexpected_index_list") or [])
        if config.type == "expect_column_distinct_values_to_contain_set" and column in frame.columns:
            missing = sorted(set(config.kwargs.get("value_set") or ()) - set(frame[column].dropna()))
            examples = [f"no rows of class {', '.join(map(repr, missing))} (classes seen: "
                        f"{', '.join(map(repr, sorted(set(frame[column].dropna()))))})"]
        elif not examples and "observed_value" in found:
            examples = [f"observed {found['observed_value']!r}"]
        if item.exception_info and item.exception_info.get("raised_exception"):
            examples.append(f"error {item.exception_info.get('exception_message')}")
        failures.append(Failure(split, (config.meta or {}).get("problem", config.type),
                                int(found.get("unexpected_count") or 0), int(found.get("element_count") or 0),
                                examples, name))
    return failures


def _examples(split: str, frame: Any, column: str, rows: list[Any]) -> list[str]:
    shown = SHOWN_COLUMN.get(column, column)
    out = []
    for row in rows[:EXAMPLES]:
        value = frame.at[row, shown] if shown in frame.columns and row in frame.index else None
        value = None if isinstance(value, float) and value != value else value  # pandas shows null as NaN
        text = repr(value) if value is None or len(str(value)) <= 60 else repr(str(value)[:57] + "...")
        out.append(f"{split} row {row} {shown}={text}")
    return out


def _split_rows(spec: TaskSpec, frames: Mapping[str, Any], results: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for split, frame in frames.items():
        result = results[split]
        dist = frame["target"].value_counts().to_dict() if spec.kind == "classification" else {}
        rows.append({"split": split, "rows": len(frame), "expectations": len(result.results),
                     "failed": sum(not r.success for r in result.results),
                     "labels": ", ".join(f"{k}: {v}" for k, v in sorted(dist.items()))})
    return rows


def _leakage(frames: Mapping[str, Any]) -> list[tuple[str, int]]:
    sets = {split: set(frame["source_sha"]) for split, frame in frames.items()}
    pairs = [("train", "validation"), ("train", "test"), ("validation", "test")]
    return [(f"{a} ∩ {b}", len(sets[a] & sets[b])) for a, b in pairs if a in sets and b in sets]


def write_reports(out: Path, spec: TaskSpec, frames: Mapping[str, Any], results: Mapping[str, Any],
                  failures: list[Failure], dropped: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write gx_results.json, summary.json, report.md and report.html under `out`; return the summary.
    `dropped`: what prepare dropped per reason (splits.dropped_report), shown in the report."""
    summary = {"task": spec.name, "success": not failures, "splits": _split_rows(spec, frames, results),
               "leakage": dict(_leakage(frames)), "failures": [f.line() for f in failures],
               "dropped_by_prepare": dict(dropped or {})}
    gx_json = {split: result.to_json_dict() for split, result in results.items()}
    atomic_write_bytes(out / "gx_results.json", json.dumps(gx_json, indent=1, default=str).encode())
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode())
    atomic_write_bytes(out / "report.md", render_markdown(spec, summary, results).encode())
    atomic_write_bytes(out / "report.html", render_html(spec, summary, results).encode())
    return summary


def _expectation_rows(results: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for split, result in results.items():
        for item in result.results:
            config, found = item.expectation_config, item.result or {}
            unexpected = found.get("unexpected_count")
            rows.append([split, config.type, str(config.kwargs.get("column", "")),
                         "pass" if item.success else "FAIL", "" if unexpected is None else str(unexpected),
                         (config.meta or {}).get("problem", "")])
    return rows


def render_markdown(spec: TaskSpec, summary: Mapping[str, Any], results: Mapping[str, Any]) -> str:
    """The report as GitHub-flavoured markdown."""
    status = "PASSED" if summary["success"] else "FAILED"
    lines = [f"# Validation report: `{spec.name}` — {status}", "",
             f"Kind: {spec.kind}; labels: {', '.join(spec.label_words) or '(generation)'}; "
             f"source: {spec.source.describe()}. Suite generated from the TaskSpec (Great Expectations).", "",
             "| split | rows | expectations | failed | label counts |", "|---|---|---|---|---|"]
    lines += [f"| {r['split']} | {r['rows']} | {r['expectations']} | {r['failed']} | {r['labels']} |"
              for r in summary["splits"]]
    lines += ["", "Leakage (shared source texts): " + (", ".join(f"{k}: {v}" for k, v in summary["leakage"].items())
                                                      or "not computed"), ""]
    lines += _dropped_lines(summary.get("dropped_by_prepare") or {})
    if summary["failures"]:
        lines += ["## Failures", ""] + [f"- {_md(f)}" for f in summary["failures"]] + [""]
    lines += ["## Expectations", "", "| split | expectation | column | result | unexpected | a failure means |",
              "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in _expectation_rows(results)]
    return "\n".join(lines) + "\n"


def _dropped_lines(dropped: Mapping[str, Any]) -> list[str]:
    """'Dropped by prepare: 3 of 100 raw rows (empty 1, too_long 0, duplicate 1, conflicting 1)' + the rows named
    (conflicts; empty and over-long rows with their raw row number and id)."""
    if not dropped:
        return []
    reasons = ", ".join(f"{k} {v}" for k, v in dropped["by_reason"].items())
    lines = [f"Dropped by prepare: {dropped['dropped']} of {dropped['total']} raw rows ({reasons})."]
    return lines + [f"- {_md(line)}" for line in named_lines(dropped, limit=10)] + [""]


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_html(spec: TaskSpec, summary: Mapping[str, Any], results: Mapping[str, Any]) -> str:
    """Self-contained HTML (inline CSS, no scripts, no network)."""
    esc = html.escape
    head = ["split", "expectation", "column", "result", "unexpected", "a failure means"]
    body = "".join("<tr>" + "".join(f"<td class='{esc(c)}'>{esc(c)}</td>" for c in row) + "</tr>"
                   for row in _expectation_rows(results))
    failures = "".join(f"<li>{esc(f)}</li>" for f in summary["failures"])
    splits = "".join(f"<li>{esc(r['split'])}: {r['rows']} rows, {r['failed']} failed; {esc(r['labels'])}</li>"
                     for r in summary["splits"])
    status = "PASSED" if summary["success"] else "FAILED"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(spec.name)} validation</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:3px 6px}"
            "table{border-collapse:collapse}.FAIL{color:#b00;font-weight:bold}.pass{color:#070}</style></head>"
            f"<body><h1>Validation report: {esc(spec.name)} — {status}</h1><ul>{splits}</ul>"
            f"<h2>Failures</h2><ul>{failures or '<li>none</li>'}</ul><h2>Expectations</h2><table><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + f"</tr>{body}</table></body></html>\n")
