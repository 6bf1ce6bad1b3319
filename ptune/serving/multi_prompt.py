"""`MultiPromptModel`: one frozen base model and the prompts of many tasks, answering mixed-task batches.

Each loaded prompt is a `LoadedTask` (immutable): the prompt (P, d), its metadata and version, its task
spec, its label ids and its cached prefix (the prompt's keys/values, computed once at load for causal
LMs; `ptune.model.prefix`). Loading a new version of a task builds the new `LoadedTask` completely and
then replaces the old one in one dict assignment: a batch that started before the swap keeps the
snapshot it took (`snapshot()`), so every row reports the version that answered it and no batch mixes
versions of one task. The old version's tensors and cache are freed when its last batch ends.

An ensemble version (`ptune train --ensemble K`: K prompts + ensemble.json) is served as one task: each
of its rows becomes K rows of the same mixed batch, one per member prompt (each with its own cached
prefix), and the K rank-classification scores are combined with the ensemble's method (`mean` or `vote`,
`ptune.evaluation.ensemble.combine`) over each member's label log-probabilities, exactly as `ptune report`
scored it. A row's `scores` are then the members' mean label log-probabilities (normalised over the labels). Ensembles of generation tasks are refused at load (there is nothing to average).

Precision: `MultiPromptModel(base, precision=torch.bfloat16)` computes as evaluation does under
`evaluate.precision` bf16 (`ptune.model.precision.inference_precision`): autocast, and on CPU every frozen
weight held in bf16, here for good (a server never trains), so no pass casts a weight. `ptune serve` passes
`evaluate.precision`, so the served scores are the ones `ptune report` computed, up to batch composition.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ptune.data.spec import TaskSpec
from ptune.errors import ArtifactError, DataError
from ptune.evaluation.ensemble import combine
from ptune.model import artifacts
from ptune.model.artifacts import PromptMeta
from ptune.model.base import BaseModel
from ptune.model.batching import encode_source, encode_target
from ptune.model.ensemble_artifact import load_ensemble
from ptune.model.layout import warn_if_layout_differs
from ptune.model.precision import hold_for_inference, inference_precision
from ptune.model.prefix import build_prefix
from ptune.serving.decode import sample_mixed
from ptune.serving.inputs import Fields, source_text
from ptune.serving.mixed import MixedRow, generate_mixed, score_mixed
from ptune.serving.sampling import Sampled, Sampling

RUNS = {"classification": score_mixed, "generation": generate_mixed, "sampled": sample_mixed}  # group -> its pass


@dataclass(frozen=True)
class LoadedTask:
    """One task's prompt version, ready to serve."""

    spec: TaskSpec
    meta: PromptMeta
    version: str  # registry version ("3"), or the directory name for prompts loaded from disk
    label_ids: tuple[tuple[int, ...], ...]  # the spec's label words as target ids; () for generation
    prompts: tuple[tuple[torch.Tensor, object | None], ...]  # (prompt (P, d) fp32, PrefixCache or None) each:
    # one, or the K members of an ensemble; the prefix is None on the plain path
    method: str = "single"  # "single", or the ensemble's "mean" | "vote"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def prompt(self) -> torch.Tensor:
        """The (first) prompt (P, d)."""
        return self.prompts[0][0]

    @property
    def prefix(self) -> object | None:
        """The (first) prompt's cached keys/values, or None."""
        return self.prompts[0][1]


@dataclass(frozen=True)
class Row:
    """One input of a predict call: the task it is for and its text, or its input fields (formatted by the
    task unless raw; `ptune.serving.inputs`)."""

    task: str
    text: str | Fields
    raw: bool = False
    sampling: Sampling | None = None  # generation rows: decoded under these options (OpenAI API); None: greedy


@dataclass(frozen=True)
class Prediction:
    task: str
    label: str  # the best label word (classification) or the generated text (generation)
    scores: dict[str, float] = field(default_factory=dict)  # label word -> summed log-likelihood
    version: str = ""
    finish: str = "stop"  # rows with `sampling`: "stop" (EOS or a stop string) or "length"
    tokens: tuple[int, int] = (0, 0)  # (source tokens, new tokens); new tokens are counted for rows with `sampling`


class MultiPromptModel:
    """One base model + N prompt versions (one per task), each checked against the base fingerprint."""

    def __init__(self, base: BaseModel, cache_prefix: bool = True, precision: torch.dtype | None = None) -> None:
        """precision: None (fp32) or the dtype evaluation computes in (`autocast_dtype` of `evaluate.precision`);
        on CPU, bf16 casts every frozen weight of `base` to bf16 now, for the model's lifetime."""
        self.base, self.cache_prefix, self.precision = base, cache_prefix, precision
        self._tasks: dict[str, LoadedTask] = {}
        self._lock = threading.Lock()  # serialises swaps; reads take a snapshot without it
        self._compute = threading.RLock()  # one forward pass at a time on the shared base model
        hold_for_inference(base.model, base.device, precision)  # so `compute` has nothing to cast

    @property
    def precision_name(self) -> str:
        """"fp32" or "bf16", as params.yaml spells it (GET /health)."""
        return "fp32" if self.precision is None else {torch.bfloat16: "bf16"}.get(self.precision, str(self.precision))

    @contextlib.contextmanager
    def compute(self):
        """One pass on the shared base model: no autograd, one at a time, in the model's precision."""
        with torch.inference_mode(), self._compute, inference_precision(self.base.model, self.base.device,
                                                                         self.precision):
            yield

    def load(self, spec: TaskSpec, prompt_dir: str | Path, version: str | None = None) -> LoadedTask:
        """Check the artifact in `prompt_dir` (checksum, shape, fingerprint == this base's), build its
        prefix cache and make it the served version of `spec.name`. ArtifactError on a mismatch: the
        previous version (if any) stays in place."""
        ensemble = load_ensemble(prompt_dir)
        weight, meta = (ensemble.prompts[0], ensemble.metas[0]) if ensemble else artifacts.load_prompt(prompt_dir)
        if meta.base_fingerprint != self.base.fingerprint:
            raise ArtifactError(
                f"refusing to serve the {meta.task!r} prompt at {prompt_dir}: it was trained on {meta.base_spec!r} "
                f"(fingerprint {meta.base_fingerprint}), but the served base model {self.base.spec!r} has fingerprint "
                f"{self.base.fingerprint}; one server holds one base model")
        if meta.task != spec.name:
            raise ArtifactError(f"{prompt_dir} holds a prompt for task {meta.task!r}, not {spec.name!r}")
        warn_if_layout_differs(meta, self.base, prompt_dir)
        if ensemble and spec.kind != "classification":
            raise ArtifactError(f"{prompt_dir} holds an ensemble of {len(ensemble.metas)} prompts for {spec.kind} "
                                f"task {spec.name!r}; only classification ensembles are served")
        version = version or Path(prompt_dir).name
        if ensemble:
            return self.add(spec, ensemble.prompts, meta, version, method=ensemble.method)
        return self.add(spec, weight, meta, version)

    def add(self, spec: TaskSpec, weight: torch.Tensor, meta: PromptMeta, version: str,
            method: str = "single") -> LoadedTask:
        """Serve an already checked prompt (P, d), or an ensemble's (K, P, d) with its `method`, as `version`
        of `spec.name` (replacing the old one)."""
        stacked = weight.to(self.base.device, torch.float32)
        stacked = stacked if stacked.dim() == 3 else stacked.unsqueeze(0)
        with self.compute():  # a swap's prefix pass waits for the running batch
            members = tuple((p, build_prefix(self.base, p, []) if self.cache_prefix else None) for p in stacked)
        tok, enc_dec = self.base.tokenizer, self.base.is_encoder_decoder
        labels = tuple(tuple(encode_target(tok, w, enc_dec, add_eos=False)) for w in spec.label_words)
        task = LoadedTask(spec, meta, str(version), labels, members, method)
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
        label words, generation rows greedy generation, or step-by-step decoding under their `sampling`
        (`ptune.serving.decode`). DataError naming the row for an unknown task."""
        tasks = self.snapshot()
        unknown = [f"row {i}: task {r.task!r}" for i, r in enumerate(rows) if r.task not in tasks]
        if unknown:
            raise DataError(f"unknown task(s): {'; '.join(unknown)}; served tasks: {sorted(tasks)}")
        units = [(i, m) for i, r in enumerate(rows) for m in self.mixed_rows(tasks[r.task], r)]  # K per row
        found: list[list] = [[] for _ in rows]  # row -> its members' outputs, in member order
        with self.compute():
            for group, run in RUNS.items():
                part_of = [u for u in units if _group(tasks[rows[u[0]].task], u[1]) == group]
                part_of.sort(key=lambda u: len(u[1].source_ids))  # less padding (a stable sort keeps member order)
                for start in range(0, len(part_of), batch_size):
                    part = part_of[start:start + batch_size]
                    for (i, _), value in zip(part, run(self.base, [m for _, m in part]), strict=True):
                        found[i].append(value)
        sources = {i: len(m.source_ids) for i, m in units}
        return [self.prediction(tasks[r.task], found[i], sources[i]) for i, r in enumerate(rows)]

    def check_rows(self, rows: Sequence[Row]) -> None:
        """DataError naming every row whose task is not served or whose input tokenises to nothing."""
        tasks, problems = self.snapshot(), []
        for i, row in enumerate(rows):
            if row.task not in tasks:
                problems.append(f"row {i}: task {row.task!r} is not served")
            elif not self.mixed_rows(tasks[row.task], row)[0].source_ids:
                shown = repr(row.text[:40]) if isinstance(row.text, str) else f"with fields {sorted(row.text)}"
                problems.append(f"row {i}: input {shown} tokenises to no tokens")
        if problems:
            raise DataError("; ".join(problems) + f" (served tasks: {sorted(tasks)})")

    def mixed_rows(self, task: LoadedTask, row: Row) -> list[MixedRow]:
        """The row once per prompt of its task (one, or K for an ensemble)."""
        spec = task.spec
        source = source_text(spec, row.text, row.raw)
        ids = encode_source(self.base.tokenizer, source, spec.max_source_tokens, self.base.is_encoder_decoder)
        labels = [list(x) for x in task.label_ids]
        return [MixedRow(ids, prompt, prefix, labels, spec.max_target_tokens, spec.stop_strings, row.sampling)
                for prompt, prefix in task.prompts]

    @staticmethod
    def prediction(task: LoadedTask, outputs: list, source_tokens: int = 0) -> Prediction:
        """One row's Prediction from its members' outputs (generated text, `Sampled`, or label scores (L,) each)."""
        if isinstance(outputs[0], Sampled):
            return Prediction(task.name, outputs[0].text, {}, task.version, outputs[0].finish,
                              (source_tokens, outputs[0].tokens))
        if task.spec.kind == "generation":
            return Prediction(task.name, outputs[0], {}, task.version, tokens=(source_tokens, 0))
        if task.method == "single":
            values = dict(zip(task.spec.label_words, outputs[0].tolist(), strict=True))
            return Prediction(task.name, max(values, key=values.__getitem__), values, task.version,
                              tokens=(source_tokens, 0))
        scores = torch.log_softmax(torch.stack(outputs).float(), dim=-1)  # (K, L), as ptune.evaluation.ensemble
        best = int(combine(scores.unsqueeze(0), task.method)[0])
        values = dict(zip(task.spec.label_words, scores.mean(0).tolist(), strict=True))
        return Prediction(task.name, task.spec.label_words[best], values, task.version, tokens=(source_tokens, 0))


def _group(task: LoadedTask, row: MixedRow) -> str:
    """Which pass answers a row: rank classification, greedy `generate()`, or step-by-step decoding."""
    if task.spec.kind == "generation" and row.sampling is not None:
        return "sampled"
    return task.spec.kind
