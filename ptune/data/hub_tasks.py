"""Hub tasks for users with internet, in the text-to-text formats of T5 / Lester et al.

Each loads with `datasets.load_dataset` only when fetched. SuperGLUE and GLUE test labels are hidden (-1),
so their official validation split becomes our test split and validation is carved from train.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ptune.data.sources import HubSource
from ptune.data.spec import ROUGE, TaskSpec

FALSE_TRUE = ("False", "True")
LABELED = {"train": "train", "test": "validation"}  # ours -> hub split (hub test labels are -1)
ALL_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


def _label(row: Mapping[str, Any], words: tuple[str, ...]) -> str:
    """Map an integer label to its word; -1 (hidden test label) or out of range raises ValueError."""
    index = int(row["label"])
    if not 0 <= index < len(words):
        raise ValueError(f"label {row['label']!r} outside 0..{len(words) - 1}")
    return words[index]


def _boolq(row: Mapping[str, Any]) -> tuple[str, str]:
    return f"boolq question: {row['question']} passage: {row['passage']}\nAnswer:", _label(row, FALSE_TRUE)


CB_LABELS = ("entailment", "contradiction", "neutral")


def _cb(row: Mapping[str, Any]) -> tuple[str, str]:
    return f"cb hypothesis: {row['hypothesis']} premise: {row['premise']}\nAnswer:", _label(row, CB_LABELS)


RTE_LABELS = ("entailment", "not_entailment")


def _rte(row: Mapping[str, Any]) -> tuple[str, str]:
    return f"rte sentence1: {row['premise']} sentence2: {row['hypothesis']}\nAnswer:", _label(row, RTE_LABELS)


COPA_LABELS = ("choice1", "choice2")


def _copa(row: Mapping[str, Any]) -> tuple[str, str]:
    text = (f"copa choice1: {row['choice1']} choice2: {row['choice2']} premise: {row['premise']} "
            f"question: {row['question']}\nAnswer:")
    return text, _label(row, COPA_LABELS)


def _wic(row: Mapping[str, Any]) -> tuple[str, str]:
    text = f"wic sentence1: {row['sentence1']} sentence2: {row['sentence2']} word: {row['word']}\nAnswer:"
    return text, _label(row, FALSE_TRUE)


def _wsc(row: Mapping[str, Any]) -> tuple[str, str]:
    """Mark the pronoun (span2, a word index) with *...* as T5 does and ask whether it refers to span1."""
    words = str(row["text"]).split(" ")
    index = int(row["span2_index"])
    if 0 <= index < len(words):
        words[index] = f"*{words[index]}*"
    text = f"wsc text: {' '.join(words)} Does *{row['span2_text']}* refer to {row['span1_text']}?\nAnswer:"
    return text, _label(row, FALSE_TRUE)


def _multirc(row: Mapping[str, Any]) -> tuple[str, str]:
    text = f"multirc question: {row['question']} answer: {row['answer']} paragraph: {row['paragraph']}\nAnswer:"
    return text, _label(row, FALSE_TRUE)


def _record(row: Mapping[str, Any]) -> tuple[str, str]:
    """Cloze over the passage's entities; target is the first gold answer (EM/F1 use all of fields.answers)."""
    passage = str(row["passage"]).replace("@highlight\n", "- ")
    entities = ", ".join(dict.fromkeys(row["entities"]))
    answers = list(row["answers"])
    if not answers:
        raise ValueError("record row without answers (hidden test label)")
    return f"record query: {row['query']} entities: {entities} passage: {passage}\nAnswer:", answers[0]


def _sst2(row: Mapping[str, Any]) -> tuple[str, str]:
    return f"sst2 sentence: {str(row['sentence']).strip()}\nAnswer:", _label(row, ("negative", "positive"))


def _dialogue_summary(row: Mapping[str, Any]) -> tuple[str, str]:
    return f"summarize: {str(row['dialogue']).strip()}\nSummary:", str(row["summary"]).strip()


def _cnn_dailymail(row: Mapping[str, Any]) -> tuple[str, str]:
    return f"summarize: {str(row['article']).strip()}\nSummary:", str(row["highlights"]).strip()


def _sg(config: str) -> HubSource:
    return HubSource("aps/super_glue", config, LABELED)


HUB_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("boolq", "classification", _sg("boolq"), ("question", "passage", "label"), _boolq, FALSE_TRUE,
             instruction="Answer the question about the passage with True or False.", max_source_tokens=512,
             description="SuperGLUE BoolQ yes/no reading comprehension"),
    TaskSpec("cb", "classification", _sg("cb"), ("premise", "hypothesis", "label"), _cb, CB_LABELS,
             ("accuracy", "f1_macro"), instruction="Does the premise entail the hypothesis?",
             description="SuperGLUE CommitmentBank 3-way NLI (unbalanced: macro-F1)"),
    TaskSpec("rte", "classification", _sg("rte"), ("premise", "hypothesis", "label"), _rte, RTE_LABELS,
             instruction="Does sentence1 entail sentence2?", description="SuperGLUE RTE entailment"),
    TaskSpec("copa", "classification", _sg("copa"), ("premise", "choice1", "choice2", "question", "label"), _copa,
             COPA_LABELS, instruction="Which choice is the cause or effect asked for?",
             description="SuperGLUE COPA causal reasoning"),
    TaskSpec("wic", "classification", _sg("wic"), ("word", "sentence1", "sentence2", "label"), _wic, FALSE_TRUE,
             instruction="Is the word used with the same meaning in both sentences?",
             description="SuperGLUE Word-in-Context"),
    TaskSpec("wsc", "classification", _sg("wsc.fixed"),
             ("text", "span1_text", "span2_text", "span2_index", "label"), _wsc, FALSE_TRUE,
             instruction="Does the marked pronoun refer to the given noun?", description="SuperGLUE Winograd schema"),
    TaskSpec("multirc", "classification", _sg("multirc"), ("paragraph", "question", "answer", "label"), _multirc,
             FALSE_TRUE, ("f1a", "em"), instruction="Is the answer to the question correct?", max_source_tokens=512,
             description="SuperGLUE MultiRC (F1a over answers, EM per question; group by fields.idx)"),
    TaskSpec("record", "generation", _sg("record"), ("passage", "query", "entities", "answers"), _record, (),
             ("em", "f1"), instruction="Fill in @placeholder with one of the entities.", k_shot=1,
             max_source_tokens=512, max_target_tokens=16, description="SuperGLUE ReCoRD cloze (EM/F1)"),
    TaskSpec("sst2", "classification", HubSource("nyu-mll/glue", "sst2", LABELED), ("sentence", "label"), _sst2,
             ("negative", "positive"), instruction="Is the sentence positive or negative?",
             description="GLUE SST-2 sentiment"),
    TaskSpec("dialogsum", "generation", HubSource("knkarthick/dialogsum", None, ALL_SPLITS), ("dialogue", "summary"),
             _dialogue_summary, (), ROUGE, instruction="Summarize the dialogue.", k_shot=1, max_source_tokens=512,
             max_target_tokens=64, description="DialogSum dialogue summarization"),
    TaskSpec("samsum", "generation", HubSource("Samsung/samsum", None, ALL_SPLITS), ("dialogue", "summary"),
             _dialogue_summary, (), ROUGE, instruction="Summarize the dialogue.", k_shot=1, max_source_tokens=512,
             max_target_tokens=64, description="SAMSum messenger-dialogue summarization"),
    TaskSpec("cnn_dailymail", "generation", HubSource("abisee/cnn_dailymail", "3.0.0", ALL_SPLITS),
             ("article", "highlights"), _cnn_dailymail, (), ROUGE, instruction="Summarize the article.", k_shot=0,
             max_source_tokens=1024, max_target_tokens=128, description="CNN/DailyMail news summarization"),
)
