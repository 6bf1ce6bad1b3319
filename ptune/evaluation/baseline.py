"""Hard-prompt baselines on the same frozen model and the same scoring mode as the tuned prompt.

- `zero_shot`: the task's instruction before each source.
- `k_shot`: instruction + k demonstrations ("<source> <target>" blocks) drawn from train with a fixed
  seed; demonstrations are dropped from the end until instruction + demonstrations + every test
  source fits `max_source_tokens` untruncated; the k actually used is in `details["k_used"]`.
- `k_shot_2`, `k_shot_3`...: the same with other demonstration draws (seed + 1, ...): k-shot accuracy swings
  with the draw, so one draw is not a fair baseline (`evaluate.kshot_draws`).
- `<row>_calibrated`: contextual calibration of each rank-mode row (`ptune.evaluation.calibration`).
- `majority`: the most frequent train label for every row (classification).
- `chat_zero_shot`: instruction + source as the user turn of the tokenizer's chat template with the
  generation prompt; the label is scored as the assistant's continuation (same target tokenisation as
  training). Omitted, with a note, when the tokenizer has no chat template.
Baselines train nothing: 0 trainable parameters, against P*d for a soft prompt.
The shared text (instruction + demonstrations, and the chat template's head) is encoded once per
`evaluate` call and its keys/values reused for every row (`ptune.model.prefix`): each row is still
tokenised whole, exactly as without the cache, and only its leading ids common to all rows are cached.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from ptune.data.spec import TaskSpec
from ptune.data.splits import Example
from ptune.evaluation.calibration import calibrated_twin
from ptune.evaluation.metrics import compute_metrics
from ptune.evaluation.scoring import EvalResult, evaluate, join_prefix, metric_meta, predict
from ptune.model.base import BaseModel

log = logging.getLogger(__name__)

BASELINES = ("zero_shot", "k_shot", "chat_zero_shot")


class BaselineResults(dict):
    """`dict[name, EvalResult]` plus `notes[name]` saying why a baseline was skipped or cut short,
    `k_used[name]` = (demonstrations used, seed) per k-shot draw, and `validation`: the same rows on the
    validation split, where the best baseline is chosen (`ptune.evaluation.analysis.select_best`)."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: dict[str, str] = {}
        self.k_used: dict[str, tuple[int, int]] = {}
        self.validation: dict[str, EvalResult] = {}


def trainable_params(prompt: torch.Tensor | None) -> int:
    """Trainable parameters of an approach: P*d for a (P, d) soft prompt, 0 for a hard prompt."""
    return 0 if prompt is None else int(prompt.numel())


def few_shot_prefix(base: BaseModel, spec: TaskSpec, train: Sequence[Example], test: Sequence[Example], k: int,
                    seed: int = 0) -> tuple[str, int]:
    """(prefix, k_used): instruction + up to k demonstrations that keep every test input within
    `spec.max_source_tokens` (untruncated). Drawn with `random.Random(seed)`: deterministic."""
    demos = random.Random(seed).sample(list(train), min(k, len(train)))
    longest = _longest_source(base, spec, test)
    while True:
        blocks = [spec.instruction.strip()] if spec.instruction.strip() else []
        blocks += [f"{ex.source} {ex.target}" for ex in demos]
        prefix = "\n\n".join(blocks)
        n_tokens = len(base.tokenizer(join_prefix(prefix, longest), add_special_tokens=True)["input_ids"])
        if n_tokens <= spec.max_source_tokens or not demos:
            return prefix, len(demos)
        demos.pop()


def prompt_window(base: BaseModel, spec: TaskSpec, k: int) -> int:
    """Tokens a hard prompt may use: room for the instruction, k demonstrations and the input, i.e.
    (k + 2) x the task's source budget, capped by the model's context. The soft prompt needs none of it;
    giving the baselines this room keeps the comparison fair (no demonstration is cut for lack of space)."""
    limit = getattr(base.model.config, "max_position_embeddings", None) or 4096
    return max(spec.max_source_tokens, min((k + 2) * spec.max_source_tokens, int(limit) - spec.max_target_tokens))


def _longest_source(base: BaseModel, spec: TaskSpec, test: Sequence[Example]) -> str:
    """The test source that is longest in tokens once placed after the instruction (the binding one)."""
    texts = [join_prefix(spec.instruction, ex.source) for ex in test]
    lengths = [len(ids) for ids in base.tokenizer(texts, add_special_tokens=True)["input_ids"]]
    return test[max(range(len(test)), key=lengths.__getitem__)].source


def chat_examples(base: BaseModel, spec: TaskSpec, examples: Sequence[Example]) -> list[Any] | None:
    """Examples whose source is the chat-templated user turn (instruction + source) followed by the
    assistant cue; None when the tokenizer has no chat template."""
    tok = base.tokenizer
    if not getattr(tok, "chat_template", None):
        return None
    bos = tok.bos_token if base.lead_id is not None else None
    out = []
    for ex in examples:
        text = tok.apply_chat_template([{"role": "user", "content": join_prefix(spec.instruction, ex.source)}],
                                       tokenize=False, add_generation_prompt=True)
        if bos and text.startswith(bos):
            text = text[len(bos):]  # encode_source adds BOS itself: do not double it
        out.append(dataclasses.replace(ex, source=text))
    return out


def draw_name(draw: int) -> str:
    """k-shot draw 0 is "k_shot" (seed = data seed, as before draws existed); draw i is "k_shot_<i+1>"."""
    return "k_shot" if draw == 0 else f"k_shot_{draw + 1}"


def run_baselines(base: BaseModel, spec: TaskSpec, train: Sequence[Example], test: Sequence[Example], *, k: int | None = None,
                  seed: int = 0, batch_size: int = 16, mode: str | None = None, split: str = "test",
                  max_examples: int | None = None, progress: bool = True, draws: int = 1, calibrate: bool = False,
                  majority: bool = False, fit: Sequence[Example] = (), passes: tuple[int, int] = (0, 0)) -> BaselineResults:
    """zero_shot, k_shot (one row per demonstration draw, seeds seed..seed+draws-1) and, where the tokenizer
    has one, chat_zero_shot on `test`. `calibrate` adds "<row>_calibrated" twins (rank mode, `calibration`),
    `majority` a "majority" row (classification). `fit`: examples of another split that will be scored with
    the same prompts, so demonstrations are chosen to fit beside them too (same prompt on every split).
    `passes` = (passes run before, passes in all) numbers each model pass in its progress label (`pass_labels`)."""
    test = list(test)[:max_examples]
    calibrate = calibrate and spec.kind == "classification"
    labels = pass_labels(base, draws, calibrate, *passes)
    common = dict(batch_size=batch_size, mode=mode, split=split, progress=progress)
    out = BaselineResults()
    k = spec.k_shot if k is None else k
    spec = dataclasses.replace(spec, max_source_tokens=prompt_window(base, spec, k))
    if majority and spec.kind == "classification":
        out["majority"] = majority_result(spec, train, test, split)
    prefixes = {"zero_shot": spec.instruction}
    for draw in range(max(1, draws)):
        prefix, k_used = few_shot_prefix(base, spec, train, [*test, *fit], k, seed + draw)
        prefixes[draw_name(draw)] = prefix
        if k_used < k:
            out.notes[draw_name(draw)] = f"{k_used} of {k} demonstrations fit in the {spec.max_source_tokens}-token window"
        out.k_used[draw_name(draw)] = (k_used, seed + draw)
    for name, prefix in prefixes.items():
        out[name] = evaluate(base, spec, test, prefix=prefix, label=labels[name], **common)
        if name in out.k_used:
            out[name].details.update(k_requested=k, k_used=out.k_used[name][0], seed=out.k_used[name][1])
        if calibrate:
            _add_calibrated(out, name, base, spec, test, split, batch_size,
                            lambda text, prefix=prefix: join_prefix(prefix, text))
    _chat_baseline(out, base, spec, test, {**common, "label": labels.get("chat_zero_shot", "")}, calibrate)
    return out


def pass_names(base: BaseModel, draws: int) -> list[str]:
    """The baselines that each take one pass of the model over a split, in the order they run."""
    chat = ["chat_zero_shot"] if getattr(base.tokenizer, "chat_template", None) else []
    return ["zero_shot", *(draw_name(d) for d in range(max(1, draws))), *chat]


def pass_labels(base: BaseModel, draws: int, calibrate: bool, before: int = 0, total: int = 0) -> dict[str, str]:
    """Progress label of each pass: "baseline 3/10: k-shot draw 2 (+ calibrated)", numbered after `before`
    earlier passes out of `total` (0: this split's passes alone); the calibrated twin reuses the pass's scores."""
    names = pass_names(base, draws)
    total, twin = total or len(names), " (+ calibrated)" if calibrate else ""
    return {name: f"baseline {before + i}/{total}: {approach_words(name)}{twin}" for i, name in enumerate(names, 1)}


def approach_words(name: str) -> str:
    """"zero_shot" -> "zero-shot", "k_shot" -> "k-shot draw 1", "k_shot_2" -> "k-shot draw 2", ..."""
    if name.startswith("k_shot"):
        return f"k-shot draw {name.removeprefix('k_shot').lstrip('_') or 1}"
    return {"zero_shot": "zero-shot", "chat_zero_shot": "chat zero-shot"}.get(name, name.replace("_", " "))


def baselines_on_two_splits(base: BaseModel, spec: TaskSpec, train: Sequence[Example], test: Sequence[Example],
                            validation: Sequence[Example], *, split: str = "test", **options) -> BaselineResults:
    """`run_baselines` on `test` and on `validation` with the same prompts (`.validation`, where the best
    baseline is chosen: model selection never looks at the test split)."""
    n = len(pass_names(base, options.get("draws", 1)))
    total = 2 * n if validation else n
    found = run_baselines(base, spec, train, test, split=split, fit=validation, passes=(0, total), **options)
    if validation:
        found.validation = run_baselines(base, spec, train, validation, split="validation", fit=test,
                                         passes=(n, total), **options)
    return found


def _chat_baseline(out: BaselineResults, base: BaseModel, spec: TaskSpec, test: list[Example], common: dict,
                   calibrate: bool) -> None:
    chat = chat_examples(base, spec, test)
    if chat is None:
        out.notes["chat_zero_shot"] = "skipped: the tokenizer has no chat template"
        log.info("task %s: chat_zero_shot baseline skipped (no chat template)", spec.name)
        return
    out["chat_zero_shot"] = evaluate(base, spec, chat, **common)
    if calibrate:
        def wrap(text: str) -> str:
            return chat_examples(base, spec, [Example("cf", text, "")])[0].source
        _add_calibrated(out, "chat_zero_shot", base, spec, test, common["split"], common["batch_size"], wrap)


def _add_calibrated(out: BaselineResults, name: str, base: BaseModel, spec: TaskSpec, test: list[Example],
                    split: str, batch_size: int, wrap) -> None:
    """Add "<name>_calibrated" (contextual calibration of row `name`), or a note saying why not."""
    def score_sources(sources: list[str]) -> list[list[float]]:
        scores: list[list[float]] = []
        predict(base, spec, sources, mode="rank", batch_size=batch_size, scores_out=scores,
                desc=f"{spec.name}/{split} [{approach_words(name)}: content-free inputs for calibration]")
        return scores

    twin = calibrated_twin(out[name], spec, test, split, score_sources, wrap)
    if twin is None:
        out.notes.setdefault(f"{name}_calibrated", "skipped: needs rank classification and a template with input fields")
    else:
        out[f"{name}_calibrated"] = twin


def majority_result(spec: TaskSpec, train: Sequence[Example], test: Sequence[Example], split: str) -> EvalResult:
    """Every row gets the most frequent label of the train split (ties: label order): the floor a classifier
    must clear. 0 trainable parameters, no model call."""
    counts = Counter(ex.target for ex in train)
    label = max(spec.label_words, key=lambda w: counts.get(w, 0)) if counts else spec.label_words[0]
    predictions = [label] * len(test)
    metrics = compute_metrics(spec.metrics, predictions, [ex.target for ex in test], split, **metric_meta(spec, test))
    return EvalResult(metrics, predictions, 0.0, len(test), 0.0, {"mode": "majority", "label": label})
