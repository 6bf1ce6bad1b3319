"""Contextual calibration (Zhao et al. 2021, "Calibrate Before Use") of a hard-prompt baseline.

A hard prompt (instruction, demonstrations, chat template) biases the model toward some labels whatever the
input. The bias is measured on content-free inputs: the task's OWN template with every input field replaced
by "N/A", "" or "[MASK]" (each scored with the same prefix as the real rows). Their label probabilities
(softmax over the L label log-likelihoods) are averaged into p_cf (L,), and every row's label distribution
is divided by it: prediction = argmax_l (log p(l | x) - log p_cf(l)), the paper's W = diag(p_cf)^-1, b = 0.
Rank classification only; nothing is trained, so a calibrated baseline still has 0 trainable parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ptune.data.spec import TaskSpec
from ptune.data.splits import Example
from ptune.evaluation.metrics import compute_metrics
from ptune.evaluation.scoring import EvalResult, metric_meta

CONTENT_FREE = ("N/A", "", "[MASK]")
_PROBE = "\x00ptune-content-free\x00"


def input_columns(spec: TaskSpec, row: Mapping[str, Any]) -> list[str]:
    """Columns of `row` that feed the source text and not the target: replacing one changes the source and
    leaves the target as it was (a label column changes the target, or the formatter refuses it)."""
    source, target = spec.formatter(row)
    found = []
    for col in spec.columns:
        if not isinstance(row.get(col), str):
            continue
        try:
            probe_source, probe_target = spec.formatter({**row, col: _PROBE})
        except Exception:  # noqa: BLE001 - a formatter that rejects the probe value does not take free text there
            continue
        if probe_source != source and probe_target == target:
            found.append(col)
    return found


def content_free_sources(spec: TaskSpec, examples: Sequence[Example]) -> list[str]:
    """The task's own template filled with each content-free string in every input column (one source per
    string in CONTENT_FREE); [] when no row shows which columns are inputs."""
    row = next((dict(ex.fields) for ex in examples if ex.fields), None)
    try:
        columns = input_columns(spec, row) if row is not None else []
    except Exception:  # noqa: BLE001 - a row the formatter cannot read: no content-free input, no calibrated row
        return []
    if not columns:
        return []
    return [spec.formatter({**row, **{col: text for col in columns}})[0] for text in CONTENT_FREE]


def content_free_logprobs(cf_scores: Sequence[Sequence[float]]) -> torch.Tensor:
    """log p_cf (L,): label probabilities of each content-free input (softmax over its L scores), averaged."""
    probs = torch.log_softmax(torch.tensor(cf_scores, dtype=torch.float64), dim=-1).exp()  # (C, L)
    return probs.mean(0).log()


def calibrated_choice(scores: Sequence[Sequence[float]], log_p_cf: torch.Tensor) -> list[int]:
    """argmax_l (log softmax(scores)_l - log p_cf_l) for each row of scores (n, L)."""
    logp = torch.log_softmax(torch.tensor(scores, dtype=torch.float64), dim=-1)  # (n, L)
    return (logp - log_p_cf).argmax(-1).tolist()


def calibrate(result: EvalResult, spec: TaskSpec, examples: Sequence[Example],
              cf_scores: Sequence[Sequence[float]], split: str) -> EvalResult:
    """The calibrated twin of a rank-mode result: same rows, predictions divided by p_cf, metrics recomputed."""
    if result.label_scores is None:
        raise ValueError(f"task {spec.name!r}: calibration needs rank-mode label scores")
    log_p_cf = content_free_logprobs(cf_scores)
    predictions = [spec.label_words[i] for i in calibrated_choice(result.label_scores, log_p_cf)]
    metrics = compute_metrics(spec.metrics, predictions, [ex.target for ex in examples], split,
                              **metric_meta(spec, examples))
    details = {**result.details, "calibrated": True,
               "p_content_free": [round(float(p), 4) for p in log_p_cf.exp().tolist()]}
    return dataclasses.replace(result, metrics=metrics, predictions=predictions, details=details)


def calibrated_twin(result: EvalResult, spec: TaskSpec, examples: Sequence[Example], split: str,
                    score_sources: Callable[[list[str]], list[list[float]]],
                    wrap: Callable[[str], str]) -> EvalResult | None:
    """Score the content-free sources, each passed through `wrap` (the baseline's own prefix or chat
    template), with `score_sources` and return the calibrated result; None when not possible."""
    sources = content_free_sources(spec, examples)
    if result.label_scores is None or not sources:
        return None
    return calibrate(result, spec, examples, score_sources([wrap(s) for s in sources]), split)
