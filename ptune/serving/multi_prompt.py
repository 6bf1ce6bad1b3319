"""`MultiPromptModel`: one frozen base model and the prompts of many tasks, answering mixed-task batches.

Each loaded prompt is a `LoadedTask` (immutable): the prompt (P, d), its metadata and version, its task
spec, its label ids and its cached prefix (the prompt's keys/values, computed once at load for causal
LMs; `ptune.model.prefix`). Loading a new version of a task builds the new `LoadedTask` completely and
then replaces the old one in one dict assignment: a batch that started before the swap keeps the
snapshot it took (`snapshot()`), so every row reports the version that answered it and no batch mixes
versions of one task. The old version's tensors and cache are freed when its last batch ends.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ptune.data.spec import TaskSpec, format_input
from ptune.errors import ArtifactError, DataError
from ptune.model import artifacts
from ptune.model.artifacts import PromptMeta
from ptune.model.base import BaseModel
from ptune.model.batching import encode_source, encode_target
from ptune.model.prefix import build_prefix
from ptune.serving.mixed import MixedRow, generate_mixed, score_mixed


@dataclass(frozen=True)
class LoadedTask:
    """One task's prompt version, ready to serve."""

    spec: TaskSpec
    prompt: torch.Tensor  # (P, d) fp32 on the base model's device
    meta: PromptMeta
    version: str  # registry version ("3"), or the directory name for prompts loaded from disk
    prefix: object | None  # ptune.model.prefix.PrefixCache of the prompt, or None (plain path)
    label_ids: tuple[tuple[int, ...], ...]  # the spec's label words as target ids; () for generation

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Row:
    """One input of a predict call: the task it is for and its text (formatted by the task unless raw)."""

    task: str
    text: str
    raw: bool = False


@dataclass(frozen=True)
class Prediction:
    task: str
    label: str  # the best label word (classification) or the generated text (generation)
    scores: dict[str, float] = field(default_factory=dict)  # label word -> summed log-likelihood
    version: str = ""


class MultiPromptModel:
    """One base model + N prompt versions (one per task), each checked against the base fingerprint."""

    def __init__(self, base: BaseModel, cache_prefix: bool = True) -> None:
        self.base, self.cache_prefix = base, cache_prefix
        self._tasks: dict[str, LoadedTask] = {}
        self._lock = threading.Lock()  # serialises swaps; reads take a snapshot without it
        self._compute = threading.RLock()  # one forward pass at a time on the shared base model

    def load(self, spec: TaskSpec, prompt_dir: str | Path, version: str | None = None) -> LoadedTask:
        """Check the artifact in `prompt_dir` (checksum, shape, fingerprint == this base's), build its
        prefix cache and make it the served version of `spec.name`. ArtifactError on a mismatch: the
        previous version (if any) stays in place."""
        weight, meta = artifacts.load_prompt(prompt_dir)
        if meta.base_fingerprint != self.base.fingerprint:
            raise ArtifactError(
                f"refusing to serve the {meta.task!r} prompt at {prompt_dir}: it was trained on {meta.base_spec!r} "
                f"(fingerprint {meta.base_fingerprint}), but the served base model {self.base.spec!r} has fingerprint "
                f"{self.base.fingerprint}; one server holds one base model")
        if meta.task != spec.name:
            raise ArtifactError(f"{prompt_dir} holds a prompt for task {meta.task!r}, not {spec.name!r}")
        return self.add(spec, weight, meta, version or Path(prompt_dir).name)

    def add(self, spec: TaskSpec, weight: torch.Tensor, meta: PromptMeta, version: str) -> LoadedTask:
        """Serve an already checked prompt (P, d) as `version` of `spec.name` (replacing the old one)."""
        prompt = weight.to(self.base.device, torch.float32)
        with torch.inference_mode(), self._compute:  # a swap's prefix pass waits for the running batch
            prefix = build_prefix(self.base, prompt, []) if self.cache_prefix else None
        tok, enc_dec = self.base.tokenizer, self.base.is_encoder_decoder
        labels = tuple(tuple(encode_target(tok, w, enc_dec, add_eos=False)) for w in spec.label_words)
        task = LoadedTask(spec, prompt, meta, str(version), prefix, labels)
        with self._lock:
            self._tasks = {**self._tasks, spec.name: task}  # a new dict: snapshots taken before stay whole
        return task

    def snapshot(self) -> Mapping[str, LoadedTask]:
        """The served versions now (an immutable view: later loads do not change it)."""
        return self._tasks

    @property
    def tasks(self) -> list[str]:
        return sorted(self._tasks)

    def predict(self, rows: Sequence[Row], *, batch_size: int = 32) -> list[Prediction]:
        """One Prediction per row, in order. Rows of any tasks share batches (one left-padded batch per
        `batch_size` rows, per-row prompts); classification rows get rank classification over their task's
        label words, generation rows greedy generation. DataError naming the row for an unknown task."""
        tasks = self.snapshot()
        unknown = [f"row {i}: task {r.task!r}" for i, r in enumerate(rows) if r.task not in tasks]
        if unknown:
            raise DataError(f"unknown task(s): {'; '.join(unknown)}; served tasks: {sorted(tasks)}")
        mixed = [self._mixed_row(tasks[r.task], r) for r in rows]
        out: list[Prediction | None] = [None] * len(rows)
        with torch.inference_mode(), self._compute:
            for kind in ("classification", "generation"):
                idx = [i for i, r in enumerate(rows) if tasks[r.task].spec.kind == kind]
                idx.sort(key=lambda i: len(mixed[i].source_ids))  # less padding
                for start in range(0, len(idx), batch_size):
                    part = idx[start:start + batch_size]
                    for i, pred in zip(part, self._run(kind, [tasks[rows[i].task] for i in part],
                                                       [mixed[i] for i in part]), strict=True):
                        out[i] = pred
        return [p for p in out if p is not None]

    def check_rows(self, rows: Sequence[Row]) -> None:
        """DataError naming every row whose task is not served or whose input tokenises to nothing."""
        tasks, problems = self.snapshot(), []
        for i, row in enumerate(rows):
            if row.task not in tasks:
                problems.append(f"row {i}: task {row.task!r} is not served")
            elif not self._mixed_row(tasks[row.task], row).source_ids:
                problems.append(f"row {i}: input {row.text[:40]!r} tokenises to no tokens")
        if problems:
            raise DataError("; ".join(problems) + f" (served tasks: {sorted(tasks)})")

    def _mixed_row(self, task: LoadedTask, row: Row) -> MixedRow:
        spec = task.spec
        text = row.text if row.raw else format_input(spec, row.text)
        ids = encode_source(self.base.tokenizer, text, spec.max_source_tokens, self.base.is_encoder_decoder)
        return MixedRow(ids, task.prompt, task.prefix, [list(x) for x in task.label_ids], spec.max_target_tokens)

    def _run(self, kind: str, tasks: list[LoadedTask], rows: list[MixedRow]) -> list[Prediction]:
        if kind == "generation":
            texts = generate_mixed(self.base, rows)
            return [Prediction(t.name, text, {}, t.version) for t, text in zip(tasks, texts, strict=True)]
        preds = []
        for t, scores in zip(tasks, score_mixed(self.base, rows), strict=True):
            values = dict(zip(t.spec.label_words, scores.tolist(), strict=True))
            preds.append(Prediction(t.name, max(values, key=values.__getitem__), values, t.version))
        return preds
