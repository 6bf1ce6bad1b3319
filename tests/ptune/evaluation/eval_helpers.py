"""Helpers for the evaluation tests: a TaskSpec and Examples built in code (no data files)."""

from __future__ import annotations

from typing import Any

from ptune.data.catalog import TaskSpec
from ptune.data.splits import Example

CLS_ROWS = [("the film was good and witty", "positive"), ("bad", "negative"), ("awful boring plot", "negative"),
            ("gorgeous fun story with a great actor", "positive"), ("dull", "negative"), ("happy", "positive"),
            ("the movie was sad but the actor was great and the plot was fun", "positive")]
GEN_ROWS = [("the team won the game said people", "team won."), ("news city year", "new city."),
            ("the actor said the film was a fun story", "actor said fun.")]


def make_spec(kind: str = "classification", **overrides: Any) -> TaskSpec:
    """A toy TaskSpec: sentiment (2 labels) or summarization."""
    base: dict[str, Any] = dict(
        name="toy_" + kind, kind=kind, columns=("text", "label"),
        formatter=lambda row: (f"Review: {row['text']}\nSentiment:", row["label"]),
        label_words=("negative", "positive") if kind == "classification" else (),
        metrics=("accuracy", "f1_macro") if kind == "classification" else ("rouge1", "rougeL"),
        instruction="Say if the review is positive or negative.", k_shot=3, max_source_tokens=64,
        max_target_tokens=6)
    base.update(overrides)
    base.setdefault("source", None)  # never fetched: evaluation only reads the examples given to it
    return TaskSpec(**base)


def make_examples(kind: str = "classification", n: int | None = None) -> list[Example]:
    rows = CLS_ROWS if kind == "classification" else GEN_ROWS
    out = []
    for i, (text, target) in enumerate(rows[:n]):
        source = f"Review: {text}\nSentiment:" if kind == "classification" else f"Article: {text}\nSummary:"
        out.append(Example(id=f"ex{i}", source=source, target=target, fields={"text": text, "label": target}))
    return out
