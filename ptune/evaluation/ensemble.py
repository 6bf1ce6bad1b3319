"""Prompt ensembles (Lester et al. 2021, §6): K prompts for one task, scored together in one batch.

Each source row is repeated K times, once per prompt, and the (B*K, P, d) per-row prompts go through the
mixed-prompt path of `score_labels` (the same batching as mixed-task serving): one forward pass scores
every member. Per member the label scores become log-probabilities over the label set (log-softmax),
then
- `mean`: the ensemble predicts the argmax of the members' averaged label log-probabilities;
- `vote`: majority vote of the members' argmaxes, ties broken by the averaged log-probabilities.
The same scores give every member's own predictions, so one pass yields the ensemble, each member, the
best single member and the mean over members (the paper's Table 3).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ptune.data.spec import TaskSpec
from ptune.data.splits import Example
from ptune.errors import ConfigError
from ptune.evaluation.metrics import compute_metrics
from ptune.evaluation.scoring import EvalResult, metric_meta, score_labels
from ptune.model.base import BaseModel
from ptune.model.batching import encode_source

METHODS = ("mean", "vote")


@dataclass(frozen=True)
class EnsembleResult:
    ensemble: EvalResult
    members: list[EvalResult]  # one per prompt, same examples, from the same forward passes

    @property
    def primary(self) -> str:
        return next(iter(self.ensemble.metrics))

    @property
    def best_single(self) -> float:
        return max(m.metrics[self.primary] for m in self.members)

    @property
    def mean_single(self) -> float:
        return statistics.fmean(m.metrics[self.primary] for m in self.members)


def member_scores(base: BaseModel, spec: TaskSpec, sources: Sequence[str], prompts: torch.Tensor, *,
                  batch_size: int = 16) -> torch.Tensor:
    """(N, K, L) label log-probabilities of each of K prompts (K, P, d) for N formatted sources; each batch
    holds batch_size // K sources (at least 1), every one repeated K times with its own prompt."""
    if not spec.label_words:
        raise ConfigError(f"task {spec.name!r}: prompt ensembles need a classification task with label words")
    k = prompts.shape[0]
    ids = [encode_source(base.tokenizer, text, spec.max_source_tokens, base.is_encoder_decoder) for text in sources]
    rows_per_batch, out = max(1, batch_size // k), []
    with torch.inference_mode():
        for i in range(0, len(ids), rows_per_batch):
            chunk = ids[i:i + rows_per_batch]
            repeated = [row for row in chunk for _ in range(k)]  # row b, prompt j at b*K + j
            per_row = prompts.repeat(len(chunk), 1, 1)  # (B*K, P, d)
            scores = score_labels(base, repeated, spec.label_words, per_row)  # (B*K, L)
            out.append(torch.log_softmax(scores.float(), dim=-1).view(len(chunk), k, -1))
    return torch.cat(out)  # (N, K, L)


def combine_check(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"ensemble method {method!r}: allowed values are {list(METHODS)}")
    return method


def combine(scores: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """(N, K, L) member log-probabilities -> (N,) ensemble label index."""
    combine_check(method)
    mean = scores.mean(dim=1)  # (N, L)
    if method == "mean":
        return mean.argmax(-1)
    votes = torch.nn.functional.one_hot(scores.argmax(-1), scores.shape[-1]).sum(1).float()  # (N, L)
    return (votes + torch.softmax(mean, -1) * 0.5).argmax(-1)  # a tie (equal votes) goes to the higher mean


def evaluate_ensemble(base: BaseModel, spec: TaskSpec, examples: Sequence[Example], prompts: torch.Tensor, *,
                      method: str = "mean", batch_size: int = 16, split: str = "test") -> EnsembleResult:
    """The ensemble and each member on `examples`, from one set of forward passes (see module doc)."""
    start = time.perf_counter()
    examples = list(examples)
    scores = member_scores(base, spec, [ex.source for ex in examples], prompts, batch_size=batch_size)
    seconds = time.perf_counter() - start
    targets, meta = [ex.target for ex in examples], metric_meta(spec, examples)

    def result(picks: torch.Tensor, details: dict) -> EvalResult:
        predictions = [spec.label_words[i] for i in picks.tolist()]
        metrics = compute_metrics(spec.metrics, predictions, targets, split, **meta)
        return EvalResult(metrics, predictions, 0.0, len(examples), seconds, {"mode": "rank", **details})

    members = [result(scores[:, j].argmax(-1), {"member": j}) for j in range(scores.shape[1])]
    return EnsembleResult(result(combine(scores, method), {"ensemble": method, "k": scores.shape[1]}), members)


def summary_markdown(task: str, found: EnsembleResult) -> str:
    """The paper's Table 3 for one task: each member, best single, mean of K, the ensemble."""
    key, k = found.primary, len(found.members)
    lines = [f"## {task}: prompt ensemble of {k} ({found.ensemble.details['ensemble']})", "",
             f"| prompt | {key} |", "|---|---|"]
    lines += [f"| member {i} | {m.metrics[key]:.4f} |" for i, m in enumerate(found.members)]
    spread = statistics.stdev([m.metrics[key] for m in found.members]) if k > 1 else 0.0
    lines += [f"| best single prompt | {found.best_single:.4f} |",
              f"| mean of {k} prompts | {found.mean_single:.4f} (sd {spread:.4f}) |",
              f"| **ensemble** | **{found.ensemble.metrics[key]:.4f}** |"]
    return "\n".join(lines) + "\n"
