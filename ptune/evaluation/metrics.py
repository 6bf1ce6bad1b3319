"""Task metrics, resolved by name from `TaskSpec.metrics`.

Every metric is `fn(predictions, references, **meta) -> float` where predictions/references are
lists of strings of equal length (ReCoRD references may be lists of acceptable answers). `meta` carries
what some metrics need: `label_words` (class set for macro-F1, positive class for F1a), `group_ids`
(MultiRC question ids for per-question EM). Unknown meta keys are ignored, so evaluate can pass the
same meta to every metric. Scores are fractions in [0, 1] except ROUGE, which is F-measure x 100.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from ptune.errors import ConfigError

Reference = str | Sequence[str]
MetricFn = Callable[..., float]


def _check(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def accuracy(predictions: Sequence[str], references: Sequence[str], **meta: Any) -> float:
    """Fraction of predictions equal to their reference (exact string match, after strip)."""
    _check(predictions, references)
    return sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True)) / len(references)


def f1_macro(predictions: Sequence[str], references: Sequence[str], *, label_words: Sequence[str] = (),
             **meta: Any) -> float:
    """Unweighted mean of per-class F1 (CB-style). Classes are `label_words` when given (an invalid
    prediction is then a miss for its true class and a false positive for no class), else the classes
    seen in references or predictions. A class with no support and no prediction scores 0, as sklearn."""
    _check(predictions, references)
    classes = list(label_words) or sorted(set(references) | set(predictions))
    scores = []
    for c in classes:
        tp = sum(p == c and r == c for p, r in zip(predictions, references, strict=True))
        fp = sum(p == c and r != c for p, r in zip(predictions, references, strict=True))
        fn = sum(p != c and r == c for p, r in zip(predictions, references, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def mcc(predictions: Sequence[str], references: Sequence[str], **meta: Any) -> float:
    """Matthews correlation coefficient, multiclass form (Gorodkin 2004; equals the binary phi
    coefficient for two classes). 0 when either marginal is constant."""
    _check(predictions, references)
    n = len(references)
    correct = sum(p == r for p, r in zip(predictions, references, strict=True))
    pred_count, true_count = Counter(predictions), Counter(references)
    cov_yy = n * correct - sum(true_count[c] * pred_count[c] for c in set(true_count) | set(pred_count))
    cov_pp = n * n - sum(v * v for v in pred_count.values())
    cov_tt = n * n - sum(v * v for v in true_count.values())
    denom = math.sqrt(cov_pp * cov_tt)
    return cov_yy / denom if denom else 0.0


def f1a(predictions: Sequence[str], references: Sequence[str], *, label_words: Sequence[str] = (),
        positive_label: str | None = None, **meta: Any) -> float:
    """MultiRC F1a: binary F1 of the positive class over all answer options. The positive class is
    `positive_label`, else `label_words[1]` (label order False, True), else "True"."""
    _check(predictions, references)
    pos = positive_label or (label_words[1] if len(label_words) == 2 else "True")
    tp = sum(p == pos and r == pos for p, r in zip(predictions, references, strict=True))
    fp = sum(p == pos and r != pos for p, r in zip(predictions, references, strict=True))
    fn = sum(p != pos and r == pos for p, r in zip(predictions, references, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def group_exact_match(predictions: Sequence[str], references: Sequence[str], group_ids: Sequence[Any]) -> float:
    """MultiRC EM: a question counts only if every one of its answer options is right; mean over questions."""
    _check(predictions, references)
    ok: dict[Any, bool] = defaultdict(lambda: True)
    for p, r, g in zip(predictions, references, group_ids, strict=True):
        ok[g] = ok[g] and p.strip() == r.strip()
    return sum(ok.values()) / len(ok)


# ---- SQuAD-style answers (ReCoRD) ----

def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles (a, an, the), squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _answers(reference: Reference) -> list[str]:
    return [reference] if isinstance(reference, str) else list(reference)


def _token_f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if not pred or not gold:
        return float(pred == gold)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_em(predictions: Sequence[str], references: Sequence[Reference], *,
             answers: Sequence[Sequence[str]] | None = None, **meta: Any) -> float:
    """Max-over-answers exact match after SQuAD normalisation (ReCoRD EM). `answers` (one list per
    example, from the raw rows) replaces the single-string references when given."""
    references = answers if answers is not None else references
    _check(predictions, references)
    return sum(max(normalize_answer(p) == normalize_answer(a) for a in _answers(r))
               for p, r in zip(predictions, references, strict=True)) / len(references)


def squad_f1(predictions: Sequence[str], references: Sequence[Reference], *,
             answers: Sequence[Sequence[str]] | None = None, **meta: Any) -> float:
    """Max-over-answers token F1 after SQuAD normalisation (ReCoRD F1); `answers` as in `squad_em`."""
    references = answers if answers is not None else references
    _check(predictions, references)
    return sum(max(_token_f1(p, a) for a in _answers(r)) for p, r in zip(predictions, references, strict=True)) / len(references)


def em(predictions: Sequence[str], references: Sequence[Reference], *, group_ids: Sequence[Any] | None = None,
       **meta: Any) -> float:
    """"em" means MultiRC per-question EM when `group_ids` are given, ReCoRD/SQuAD EM otherwise."""
    if group_ids is not None:
        return group_exact_match(predictions, references, group_ids)  # type: ignore[arg-type]
    return squad_em(predictions, references, **meta)


# ---- ROUGE (summarization) ----

_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=\S)")


def split_sentences(text: str) -> list[str]:
    """Regex sentence splitter (nltk's punkt data is not available offline): split after . ! ? followed
    by whitespace, and on existing newlines."""
    parts = []
    for line in text.splitlines():
        parts.extend(s.strip() for s in _SENTENCE_END.split(line.strip()) if s.strip())
    return parts


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)


@lru_cache(maxsize=8192)
def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """F-measure x 100 of ROUGE-1/2/L/Lsum for one pair; Lsum sees one sentence per line."""
    scorer = _scorer()
    flat = scorer.score(reference, prediction)  # reference first
    lsum = scorer.score("\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction)))
    return {"rouge1": 100 * flat["rouge1"].fmeasure, "rouge2": 100 * flat["rouge2"].fmeasure,
            "rougeL": 100 * flat["rougeL"].fmeasure, "rougeLsum": 100 * lsum["rougeLsum"].fmeasure}


def _rouge(kind: str) -> MetricFn:
    def metric(predictions: Sequence[str], references: Sequence[str], **meta: Any) -> float:
        _check(predictions, references)
        return sum(rouge_scores(p, r)[kind] for p, r in zip(predictions, references, strict=True)) / len(references)
    metric.__name__ = kind
    metric.__doc__ = f"Mean {kind} F-measure x 100 (stemmed)."
    return metric


def exact_match(predictions: Sequence[str], references: Sequence[str], **meta: Any) -> float:
    """Exact string match after strip and lower-casing (generation of label words)."""
    _check(predictions, references)
    return sum(p.strip().lower() == r.strip().lower() for p, r in zip(predictions, references, strict=True)) / len(references)


METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy, "f1_macro": f1_macro, "mcc": mcc, "f1a": f1a, "em": em, "f1": squad_f1,
    "rouge1": _rouge("rouge1"), "rouge2": _rouge("rouge2"), "rougeL": _rouge("rougeL"),
    "rougeLsum": _rouge("rougeLsum"), "exact_match": exact_match,
}


# Metrics that are a mean over examples: their per-example scores (same scale as the metric) let the bootstrap
# resample a vector instead of recomputing the metric (ptune.evaluation.stats); the others (macro-F1, MCC,
# F1a, MultiRC EM) are recomputed on every resample.
_PER_EXAMPLE: dict[str, Callable[[str, Reference], float]] = {
    "accuracy": lambda p, r: float(p.strip() == str(r).strip()),
    "exact_match": lambda p, r: float(p.strip().lower() == str(r).strip().lower()),
    **{kind: (lambda p, r, kind=kind: rouge_scores(p, r)[kind]) for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum")},
    "f1": lambda p, r: max(_token_f1(p, a) for a in _answers(r)),
}


def per_example_scores(name: str, predictions: Sequence[str], references: Sequence[Reference],
                       **meta: Any) -> list[float] | None:
    """One score per example whose mean is metric `name` (accuracy, exact match, ROUGE, SQuAD EM/F1);
    None for metrics that do not decompose over examples (macro-F1, MCC, F1a, MultiRC per-question EM)."""
    _check(predictions, references)
    if name == "em" and meta.get("group_ids") is None:
        refs = meta.get("answers") or references
        return [float(max(normalize_answer(p) == normalize_answer(a) for a in _answers(r)))
                for p, r in zip(predictions, refs, strict=True)]
    if name == "f1" and meta.get("answers") is not None:
        references = meta["answers"]
    fn = _PER_EXAMPLE.get(name)
    return None if fn is None else [fn(p, r) for p, r in zip(predictions, references, strict=True)]


def get_metric(name: str) -> MetricFn:
    """The metric called `name`; ConfigError listing the known names otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}") from None


def compute_metrics(names: Sequence[str], predictions: Sequence[str], references: Sequence[Reference],
                    split: str = "test", **meta: Any) -> dict[str, float]:
    """{"<split>/<name>": value} for every name, in the given order (first = primary metric)."""
    fns = [(name, get_metric(name)) for name in names]  # fail on any unknown name before computing
    return {f"{split}/{name}": float(fn(predictions, references, **meta)) for name, fn in fns}
