"""Hard-prompt baselines on the same frozen model and the same scoring mode as the tuned prompt.

- `zero_shot`: the task's instruction before each source.
- `k_shot`: instruction + k demonstrations ("<source> <target>" blocks) drawn from train with a fixed
  seed; demonstrations are dropped from the end until instruction + demonstrations + every test
  source fits `max_source_tokens` untruncated; the k actually used is in `details["k_used"]`.
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
from collections.abc import Sequence
from typing import Any

import torch

from ptune.data.spec import TaskSpec
from ptune.data.splits import Example
from ptune.evaluation.scoring import evaluate, join_prefix
from ptune.model.base import BaseModel

log = logging.getLogger(__name__)

BASELINES = ("zero_shot", "k_shot", "chat_zero_shot")


class BaselineResults(dict):
    """`dict[name, EvalResult]` plus `notes[name]` saying why a baseline was skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: dict[str, str] = {}


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
    bos = tok.bos_token if tok.bos_token and _adds_bos(base) else None
    out = []
    for ex in examples:
        text = tok.apply_chat_template([{"role": "user", "content": join_prefix(spec.instruction, ex.source)}],
                                       tokenize=False, add_generation_prompt=True)
        if bos and text.startswith(bos):
            text = text[len(bos):]  # encode_source adds BOS itself: do not double it
        out.append(dataclasses.replace(ex, source=text))
    return out


def _adds_bos(base: BaseModel) -> bool:
    ids = base.tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == base.tokenizer.bos_token_id


def run_baselines(base: BaseModel, spec: TaskSpec, train: Sequence[Example], test: Sequence[Example], *, k: int | None = None,
                  seed: int = 0, batch_size: int = 16, mode: str | None = None, split: str = "test",
                  max_examples: int | None = None, progress: bool = True) -> BaselineResults:
    """zero_shot, k_shot and (where the tokenizer has one) chat_zero_shot results on `test`."""
    test = list(test)[:max_examples]
    common = dict(batch_size=batch_size, mode=mode, split=split, progress=progress)
    out = BaselineResults()
    k = spec.k_shot if k is None else k
    spec = dataclasses.replace(spec, max_source_tokens=prompt_window(base, spec, k))
    out["zero_shot"] = evaluate(base, spec, test, prefix=spec.instruction, **common)
    prefix, k_used = few_shot_prefix(base, spec, train, test, k, seed)
    out["k_shot"] = evaluate(base, spec, test, prefix=prefix, **common)
    out["k_shot"].details.update(k_requested=k, k_used=k_used, seed=seed)
    if k_used < k:
        out.notes["k_shot"] = f"{k_used} of {k} demonstrations fit in the {spec.max_source_tokens}-token window"
    chat = chat_examples(base, spec, test)
    if chat is None:
        out.notes["chat_zero_shot"] = "skipped: the tokenizer has no chat template"
        log.info("task %s: chat_zero_shot baseline skipped (no chat template)", spec.name)
    else:
        out["chat_zero_shot"] = evaluate(base, spec, chat, **common)
    return out
