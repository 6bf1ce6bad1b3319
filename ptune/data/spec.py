"""What a task is: `TaskSpec`, the task kinds, metric names and the formatters that turn a raw row into
(source, target). A low module: it imports nothing of the catalog, so the catalog, hub tasks, user tasks,
data preparation and evaluation all depend on it and never on each other.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ptune.data.sources import Source
from ptune.errors import ConfigError, DataError

KINDS = ("classification", "generation")
METRICS = {
    "classification": ("accuracy", "f1_macro", "mcc", "f1a", "em", "exact_match"),
    "generation": ("rouge1", "rouge2", "rougeL", "rougeLsum", "em", "f1", "exact_match"),
}
ROUGE = ("rougeL", "rouge1", "rouge2", "rougeLsum")  # rougeL first: the primary metric (promotion, early stopping)
Formatter = Callable[[Mapping[str, Any]], tuple[str, str]]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str                        # "classification" | "generation"
    source: Source                   # package / bigbench / hub / local (ptune/sources.py)
    columns: tuple[str, ...]         # raw input columns the formatter reads
    formatter: Formatter             # raw row -> (source_text ending in its cue, target_text without leading space)
    label_words: tuple[str, ...] = ()  # classification targets, in label order; () for generation
    metrics: tuple[str, ...] = ("accuracy",)  # first one is the primary metric (promotion, early stop)
    instruction: str = ""            # hard-prompt baseline instruction (params.yaml evaluate.instructions replaces it)
    k_shot: int = 4
    max_source_tokens: int = 256
    max_target_tokens: int = 16      # generation: max new tokens
    description: str = ""
    stop_strings: tuple[str, ...] = ()  # generation: output ends at the first of these (after leading whitespace)

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind={self.kind!r} (allowed: {', '.join(KINDS)})")
        if (self.kind == "classification") != bool(self.label_words):
            problems.append(f"label_words={self.label_words!r}: required for classification, empty for generation")
        bad = [m for m in self.metrics if m not in METRICS.get(self.kind, ())]
        if bad or not self.metrics:
            problems.append(f"metrics={self.metrics!r} (allowed for {self.kind}: {', '.join(METRICS.get(self.kind, ()))})")
        if not isinstance(self.stop_strings, tuple) or not all(isinstance(x, str) and x for x in self.stop_strings):
            problems.append(f"stop_strings={self.stop_strings!r}: a tuple of non-empty strings")
        if self.max_source_tokens <= 0 or self.max_target_tokens <= 0 or self.k_shot < 0:
            problems.append("max_source_tokens, max_target_tokens must be > 0 and k_shot >= 0")
        if problems:
            raise ConfigError(f"task {self.name!r}: " + "; ".join(problems))

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The columns a caller supplies: all but the last, which holds the target in every catalog entry and
        user task (tests/ptune/data/test_catalog.py checks the convention on every built-in)."""
        return self.columns[:-1] if len(self.columns) > 1 else self.columns

    @property
    def max_source_chars(self) -> int:
        """Character bound used by prepare (drops longer rows) and validation: ~12 characters per token."""
        return self.max_source_tokens * 12

    @property
    def max_target_chars(self) -> int:
        return self.max_target_tokens * 12


@dataclass(frozen=True)
class TemplateFormatter:
    """Row -> (template filled with the row's fields, target field mapped through label_map)."""

    template: str
    target_field: str
    label_map: tuple[tuple[str, str], ...] = ()

    def __call__(self, row: Mapping[str, Any]) -> tuple[str, str]:
        values = {key: "" if value is None else value for key, value in row.items()}
        raw = row[self.target_field]
        target = "" if raw is None else str(raw).strip()
        return self.template.format_map(values), dict(self.label_map).get(target, target)


def placeholders(template: str) -> list[str]:
    """Field names in a str.format template (ValueError on unbalanced braces)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def target_stand_ins(spec: TaskSpec) -> tuple[str, ...]:
    """Target values tried in turn when formatting an input without its target: empty, the label words, a
    label index, a boolean (some formatters parse the target, which the source text never depends on)."""
    return ("", *spec.label_words, "0", "true")


def format_fields(spec: TaskSpec, fields: Mapping[str, Any]) -> str:
    """The source text the task's formatter makes from a row with these input fields (the others empty),
    as `prepare` formats a training row. DataError, suggesting raw input, when the formatter accepts none
    of the stand-in targets."""
    target = spec.columns[-1] if len(spec.columns) > 1 else None
    failure: Exception | None = None
    for stand_in in target_stand_ins(spec) if target else ("",):
        row = {col: "" for col in spec.columns} | ({target: stand_in} if target else {}) | dict(fields)
        try:
            return spec.formatter(row)[0]
        except Exception as exc:  # noqa: BLE001 - task code: a refused stand-in means "try the next one"
            failure = exc
    raise DataError(f"task {spec.name!r} needs the fields {list(spec.input_columns)} to format an input "
                    f"({type(failure).__name__}: {failure}); pass the formatted source as raw input") from None


def format_input(spec: TaskSpec, text: str) -> str:
    """The source text the task's formatter makes when `text` fills its first column (other columns empty)."""
    return format_fields(spec, {spec.columns[0]: text})


def input_template(spec: TaskSpec) -> str:
    """The source text a task's formatter makes, with `{column}` where each input column's value goes
    ("Review: {text}\nSentiment:"): a template formatter's own template; for a function formatter, its
    output on a row of placeholders (the target column, and then one more, may need a real value: a label
    index, "true", a label word). "" when no such row formats."""
    template = getattr(spec.formatter, "template", None)
    if isinstance(template, str):
        return template
    row: dict[str, Any] = {col: "{" + col + "}" for col in spec.columns}
    target, others = spec.columns[-1], spec.columns[:-1]
    rows = [row, *({**row, target: value} for value in (0, "true", "1", *spec.label_words)),
            *({**row, target: 0, col: 0} for col in others)]
    for candidate in rows:
        try:
            return spec.formatter(candidate)[0]
        except Exception:  # noqa: BLE001, S112 - a formatter that needs a real value here: try the next row
            continue
    return ""


def spec_identity(spec: TaskSpec) -> dict[str, Any]:
    """What defines a task's data, as JSON (a function formatter is named; a template formatter is its repr)."""
    fmt = spec.formatter
    formatter = repr(fmt) if hasattr(fmt, "__dataclass_fields__") else f"{fmt.__module__}.{fmt.__qualname__}"
    return {"name": spec.name, "kind": spec.kind, "source": spec.source.describe(), "columns": list(spec.columns),
            "formatter": formatter, "labels": list(spec.label_words), "metrics": list(spec.metrics),
            "max_source_tokens": spec.max_source_tokens, "max_target_tokens": spec.max_target_tokens}
