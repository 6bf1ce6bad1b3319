"""What `prepare` refuses and what it drops, per reason, with the rows named.

Refused (DataError naming file, row, field and what was expected): a template or target field holding an
object or a list; too few usable rows to fill the three splits; dropping more than `data.max_dropped_share`
of the raw rows. Dropped and counted: `empty` (empty target, or every column empty), `too_long` (source over
`max_source_chars`), `duplicate` (a source seen before with the same target) and `conflicting` (a source seen
with different targets: every such row goes, since keeping one would be a guess; both rows are reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptune.data.spec import TaskSpec, TemplateFormatter, placeholders
from ptune.errors import DataError

REASONS = ("empty", "too_long", "duplicate", "conflicting")
MAX_LISTED = 5


@dataclass
class Dropped:
    """Rows `prepare` dropped, per reason, out of `total` raw rows; `conflicts` names the rows of each clash,
    `rows` each empty or over-long row (raw row number, id, why)."""

    total: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    conflicts: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)

    def drop(self, reason: str, number: int, row_id: str, why: str) -> None:
        """Count one empty or over-long raw row and name it: 'row 23 (id mine-0a1b...): empty: ...'."""
        self.counts[reason] += 1
        self.rows.append(f"row {number} (id {row_id}): {reason}: {why}")

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """'dropped 3 of 100 rows: empty=1, too_long=0, duplicate=1, conflicting=1' (+ the rows named)."""
        return self.headline() + self.named()

    def headline(self) -> str:
        return f"dropped {self.n} of {self.total} rows: " + ", ".join(f"{k}={v}" for k, v in self.counts.items())

    def named(self) -> str:
        return "".join(f"\n  - {line}" for line in named_lines(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "dropped": self.n, "by_reason": dict(self.counts), "conflicts": self.conflicts,
                "rows": self.rows}


def named_lines(dropped: dict[str, Any], limit: int = MAX_LISTED) -> list[str]:
    """The dropped rows named in a report (`Dropped.to_dict()`): conflicts, then empty and over-long rows."""
    lines = []
    for key, what in (("conflicts", "conflicting targets"), ("rows", "dropped")):
        items = dropped.get(key) or []
        lines += [f"{what}: {item}" for item in items[:limit]]
        lines += [f"... {len(items) - limit} more {what} rows"] if len(items) > limit else []
    return lines


def scalar_fields(spec: TaskSpec) -> list[str]:
    """The fields a user template fills plus its target field (built-in formatters read their own columns)."""
    fmt = spec.formatter
    return [*placeholders(fmt.template), fmt.target_field] if isinstance(fmt, TemplateFormatter) else []


def check_scalars(spec: TaskSpec, rows: list[dict[str, Any]], raw: Path) -> None:
    """DataError listing rows whose template/target fields hold an object or a list."""
    names = scalar_fields(spec)
    problems = [f"{raw} row {number}: field {name!r} is a {type(row[name]).__name__} ({str(row[name])[:40]}); "
                "expected a string or a number (template and target fields must be scalars)"
                for number, row in enumerate(rows, start=1) for name in names
                if isinstance(row.get(name), (dict, list))]
    if problems:
        more = [f"... {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        raise DataError(f"task {spec.name!r}: {len(problems)} non-scalar values:\n  - "
                        + "\n  - ".join(problems[:MAX_LISTED] + more))


def is_empty(spec: TaskSpec, fields: dict[str, Any], target: str) -> bool:
    """An empty target, or nothing in the fields the source is made of (a user template's placeholders;
    a built-in task's columns)."""
    fmt = spec.formatter
    columns = placeholders(fmt.template) if isinstance(fmt, TemplateFormatter) else spec.columns
    return not target.strip() or all(not str(fields.get(c) or "").strip() for c in columns)


def dedupe(rows: list[dict[str, Any]], dropped: Dropped) -> list[dict[str, Any]]:
    """Keep the first row of each source text; repeats with the same target are `duplicate`; a source seen with
    different targets drops every row of it as `conflicting` (rows carry their raw line number in `_line`)."""
    first: dict[str, dict[str, Any]] = {}
    clashing: set[str] = set()
    for row in rows:
        seen = first.setdefault(row["source"], row)
        if seen is row:
            continue
        if row["target"] != seen["target"]:
            dropped.conflicts.append(f"rows {seen['_line']} and {row['_line']}: same source {row['source'][:60]!r}, "
                                     f"targets {seen['target']!r} vs {row['target']!r}")
            dropped.counts["conflicting"] += 1 + (row["source"] not in clashing)
            clashing.add(row["source"])
        elif row["source"] in clashing:
            dropped.counts["conflicting"] += 1
        else:
            dropped.counts["duplicate"] += 1
    return [row for row in first.values() if row["source"] not in clashing]


def check_dropped(spec: TaskSpec, dropped: Dropped, max_share: float, raw: Path) -> None:
    """DataError when prepare dropped more than `max_share` of the raw rows."""
    if dropped.total and dropped.n / dropped.total > max_share:
        raise DataError(f"{raw}: task {spec.name!r}: {dropped.headline()} ({dropped.n / dropped.total:.0%}), "
                        f"over data.max_dropped_share={max_share}{dropped.named()}")


def check_enough(spec: TaskSpec, counts: dict[str, int], dropped: Dropped, raw: Path) -> None:
    """DataError naming the minimum when a split would be empty."""
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        usable = dropped.total - dropped.n
        raise DataError(f"{raw}: too few rows for task {spec.name!r}: {usable} usable of {dropped.total} "
                        f"({dropped.n} dropped) leave split {', '.join(empty)} empty; at least 3 usable rows are "
                        f"needed (1 each for train, validation and test)")
