"""Train one soft prompt on a frozen base model (Lester et al. 2021): only the prompt is optimised.

Loop: length-bucketed, dynamically padded batches whose order is a pure function of (seed, epoch);
loss = target_loss(base, shared_prompt_inputs(base, prompt.weight, **batch)) (the prompt's own pass runs once
per batch at batch size 1; same loss and gradient as prompt_inputs; with train.gradient_checkpointing each layer
is recomputed in the backward instead of kept: `recomputed_layers`); validation every `eval_every` steps
(primary metric = first of spec.metrics, higher is better) with early stopping; the best prompt is kept.
Checkpoints go to `out_dir/checkpoint/` or to the `checkpoint` location the pipeline computed from
train.checkpoint_uri (ptune.training.store), and a rerun (on any machine that sees that location) resumes from
them, reaching the same final prompt as an uninterrupted run.
Under a data-parallel launch (`ptune train --nproc N`, ptune.training.distributed) each rank trains on its
share of every global batch of `batch_size` rows; rank 0 validates, checkpoints and calls `callback`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ptune.config import TrainConfig
from ptune.data.spec import TaskSpec
from ptune.data.splits import Example
from ptune.errors import ConfigError, DataError
from ptune.model.base import BaseModel
from ptune.model.batching import Encoded, bucketed_batches, collate, encode_pair
from ptune.model.precision import autocast, autocast_dtype, inference_precision, training_attention
from ptune.model.soft_prompt import SoftPrompt, cap_token_rms, shared_prompt_inputs, target_loss, vocab_rms
from ptune.training.distributed import SINGLE, Sync, target_labels
from ptune.training.history import StepInfo, TrainResult
from ptune.training.progress import TrainProgress
from ptune.training.recompute import recomputed_layers, step_inputs
from ptune.training.state import TrainState, compat_key, new_state, resume, save
from ptune.training.store import open_store

log = logging.getLogger(__name__)

SPIKE_WINDOW, SPIKE_MIN_HISTORY = 20, 5  # guard: median of the last 20 applied losses, once 5 exist


def train_prompt(base: BaseModel, spec: TaskSpec, train: Sequence[Example], validation: Sequence[Example], cfg: TrainConfig,
                 out_dir: Path, callback: Callable[[StepInfo], None] | None = None,
                 init_path: Path | None = None, checkpoint: str | Path | None = None) -> TrainResult:
    """Train a soft prompt for `spec` on `train` (Examples), validating on `validation`; see module doc.
    `checkpoint`: a directory or fsspec URL (ptune.training.store.location); default out_dir/checkpoint."""
    start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    sync = Sync.current()  # one process, or one rank of a data-parallel training
    device = _resolve_device(base, cfg)
    amp = autocast_dtype(cfg.precision, device, base.n_params, "train.precision")
    items = encode_examples(base, spec, train)
    state = _new_state(base, spec, cfg, init_path, device)
    meta = compat_key(base, spec, cfg, train, init_path)
    store = open_store(checkpoint if checkpoint is not None else Path(out_dir) / "checkpoint")
    resumed_from = sync.in_turn(lambda: resume(store, state, meta), "the step to resume from")
    cap = cfg.max_token_rms * vocab_rms(base) if cfg.max_token_rms else 0.0  # absolute per-token RMS cap
    order = BatchOrder([len(it.source_ids) + len(it.target_ids) for it in items], cfg.batch_size, cfg.seed)
    progress = TrainProgress(spec.name, cfg.max_steps, state.step, quiet=not sync.main)  # a bar / log lines
    while not state.stopped_early and state.step < cfg.max_steps:
        batch = _batch(base, items, sync.shard(order(state.step)), device)  # this rank's share of the batch
        info = _step(base, spec, state, batch, validation, cfg, amp, cap, sync)
        last = state.stopped_early or state.step >= cfg.max_steps
        if not sync.main:  # rank 0 alone writes and reports
            continue
        if cfg.checkpoint_every and (state.step % cfg.checkpoint_every == 0 or last):
            save(store, state, meta)
        progress.update(info, state.best_value)
        if callback is not None:
            callback(info)
    progress.close()
    log.info("trained %s: %d steps (%d skipped by the spike guard), %.1f s in steps, %.1f s in validation",
             spec.name, state.step, state.skipped_steps, sum(h.step_seconds for h in state.history),
             sum(h.validation_seconds or 0.0 for h in state.history))
    best = state.best_weight if state.best_weight is not None else state.prompt.fold()
    best_step = state.best_step if state.best_weight is not None else state.step
    return TrainResult(SoftPrompt(best), best_step, dict(state.best_metrics), state.history, state.step,
                       time.perf_counter() - start, resumed_from, str(device),
                       str(amp).removeprefix("torch.") if amp else None)


def _batch(base: BaseModel, items: Sequence[Encoded], rows: Sequence[int],
           device: torch.device) -> dict[str, torch.Tensor]:
    """Rows `rows` of `items`, padded, on `device`; {} for no rows (a rank's share of a short last batch)."""
    if not rows:
        return {}
    batch = collate([items[i] for i in rows], base.tokenizer.pad_token_id, base.is_encoder_decoder)
    return {k: v.to(device) for k, v in batch.items()}


def _step(base: BaseModel, spec: TaskSpec, state: TrainState, batch: dict[str, torch.Tensor],
          validation: Sequence[Example], cfg: TrainConfig, amp: torch.dtype | None, cap: float,
          sync: Sync) -> StepInfo:
    """One optimizer step, then validation (and best/early-stop bookkeeping) when it is due: on rank 0, whose
    metrics every rank then gets, so they all keep the same best prompt and stop together."""
    lr = float(state.optimizer.param_groups[0]["lr"])
    start = time.perf_counter()
    loss, skipped, rolled = train_step(base, state, batch, cfg, amp, cap, sync)
    step_seconds, state.step = time.perf_counter() - start, state.step + 1
    if skipped:
        log.warning("%s step %d: loss %.4f > %g x running median: update skipped%s", spec.name, state.step, loss,
                    cfg.spike_factor, ", previous update rolled back" if rolled else "")
    metrics, validation_seconds = None, None
    if cfg.eval_every and validation and (state.step % cfg.eval_every == 0 or state.step == cfg.max_steps):
        start = time.perf_counter()
        metrics = sync.from_main(lambda: _evaluate(base, spec, validation, state.prompt.fold(), cfg, amp))
        validation_seconds = time.perf_counter() - start
        _track_best(state, metrics, f"validation/{spec.metrics[0]}", cfg.patience)
        log.info("%s step %d: loss %.4f, %s (validation %.1f s)", spec.name, state.step, loss, metrics,
                 validation_seconds)
    info = StepInfo(state.step, loss, metrics, lr, step_seconds, validation_seconds, skipped,
                    state.skipped_steps + skipped)
    state.history.append(info)
    return info


def _resolve_device(base: BaseModel, cfg: TrainConfig) -> torch.device:
    """cfg.device 'auto' -> where the base model is; an explicit device moves the base model there."""
    if cfg.device == "auto":
        return base.device
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda': no CUDA device is available (use auto or cpu)")
    device = torch.device(cfg.device)
    if base.device.type != device.type:
        base.model.to(device)
    return base.device


def encode_examples(base: BaseModel, spec: TaskSpec, examples: Sequence[Example]) -> list[Encoded]:
    """Tokenise every (source, target) once, with the one rule shared with scoring (ptune.model.batching)."""
    if not examples:
        raise DataError(f"task {spec.name!r}: the train split is empty, nothing to train on")
    return [encode_pair(base.tokenizer, ex.source, ex.target, encoder_decoder=base.is_encoder_decoder,
                        add_eos=spec.kind == "generation", max_source_tokens=spec.max_source_tokens)
            for ex in examples]


class BatchOrder:
    """Step -> batch indices. Epoch e's order is bucketed_batches(seed, e), so it is the same after resume."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.per_epoch = len(self._epoch(0))
        self._cache: tuple[int, list[list[int]]] = (0, self._epoch(0))

    def _epoch(self, epoch: int) -> list[list[int]]:
        return list(bucketed_batches(self.lengths, self.batch_size, random.Random(self.seed * 1_000_003 + epoch)))

    def __call__(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.per_epoch)
        if self._cache[0] != epoch:
            self._cache = (epoch, self._epoch(epoch))
        return self._cache[1][index]


def _initial_prompt(base: BaseModel, spec: TaskSpec, cfg: TrainConfig, init_path: Path | None) -> SoftPrompt:
    """The starting prompt from cfg.init (ptune.model.soft_prompt.init_prompt; local uniform ±0.5 for 'random'
    while that function is not available)."""
    path = init_path or cfg.init_path
    if cfg.init == "file" and not path:
        raise ConfigError("train.init = 'file': give train.init_path or train_prompt(init_path=...)")
    try:
        from ptune.model.soft_prompt import init_prompt
    except ImportError:
        if cfg.init != "random":
            raise ConfigError(f"train.init = {cfg.init!r}: ptune.model.soft_prompt.init_prompt is not available") from None
        gen = torch.Generator().manual_seed(cfg.seed)
        return SoftPrompt(torch.rand(cfg.n_tokens, base.hidden_size, generator=gen) - 0.5)  # (P, d)
    return init_prompt(base, cfg.n_tokens, cfg.init, label_words=tuple(spec.label_words), text=cfg.init_text,
                       path=path, seed=cfg.seed)


def _new_state(base: BaseModel, spec: TaskSpec, cfg: TrainConfig, init_path: Path | None,
               device: torch.device) -> TrainState:
    """Fresh prompt (fp32, on `device`), reparam MLP, optimizer and lr schedule (ptune.training.state)."""
    torch.manual_seed(cfg.seed)
    return new_state(_initial_prompt(base, spec, cfg, init_path).to(device=device, dtype=torch.float32), cfg)


def train_step(base: BaseModel, state: TrainState, batch: dict[str, torch.Tensor], cfg: TrainConfig,
               amp: torch.dtype | None, cap: float, sync: Sync = SINGLE) -> tuple[float, bool, bool]:
    """One step on the prompt (and reparam MLP): (batch loss, skipped, rolled back). After the update, raw prompt
    tokens above RMS `cap` (> 0) are scaled back to it (train.max_token_rms). A loss above `spike_factor` x the
    running median is not applied (no backward, no update) and rolls back the update before it, to the state
    that last gave a normal loss; the lr schedule advances either way. Skipping alone could leave a diverged
    prompt in place with every later step skipped (seen on rotten_tomatoes, seed 1: docs/training.md).
    Data-parallel (`sync`): `batch` is this rank's share (maybe none); the loss is the global batch's and the
    gradient is averaged over the ranks before the update, so every rank takes the same step."""
    with training_attention(base.model, base.device, amp), recomputed_layers(base.model, cfg.gradient_checkpointing):
        with autocast(base.device, amp):
            loss = target_loss(base, step_inputs(base, state.prompt(), batch, cfg.gradient_checkpointing)) if batch else None
        value, weight = sync.global_loss(loss, target_labels(base, batch))
        skipped = _is_spike(value, state.history, cfg.spike_factor)
        if not skipped and loss is not None:
            sync.backward(loss, weight)
    rolled = False
    if skipped:  # the previous update probably caused it: go back to the state that gave a normal loss
        rolled = state.roll_back()
    else:
        sync.average_gradients(state.prompt.parameters())
        if cfg.spike_factor:
            state.remember_good()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(state.prompt.parameters(), cfg.grad_clip)
        state.optimizer.step()
        if cap:
            cap_token_rms(state.prompt.raw, cap)
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    return value, skipped, rolled


def _is_spike(loss: float, history: Sequence[StepInfo], factor: float) -> bool:
    """Is `loss` above `factor` x the median loss of the last SPIKE_WINDOW applied steps? (factor 0: never)"""
    if not factor:
        return False
    recent = [h.loss for h in history if not h.skipped][-SPIKE_WINDOW:]
    if len(recent) < SPIKE_MIN_HISTORY:
        return False
    recent.sort()
    mid = len(recent) // 2
    median = recent[mid] if len(recent) % 2 else (recent[mid - 1] + recent[mid]) / 2
    return not loss <= factor * median  # NaN counts as a spike


@torch.no_grad()
def _validation_loss(base: BaseModel, spec: TaskSpec, examples: Sequence[Example], weight: torch.Tensor,
                     batch_size: int) -> float:
    """Mean loss per target token over `examples`, with prompt `weight` (P, d), in the caller's precision."""
    items = encode_examples(base, spec, examples)
    total, count = 0.0, 0
    for i in range(0, len(items), batch_size):
        batch = {k: v.to(base.device) for k, v in collate(items[i:i + batch_size], base.tokenizer.pad_token_id,
                                                           base.is_encoder_decoder).items()}
        n = int((batch["labels"] != -100).sum())
        loss = target_loss(base, shared_prompt_inputs(base, weight, **batch))
        total, count = total + float(loss.float()) * n, count + n
    return total / max(count, 1)


def _validate(base: BaseModel, spec: TaskSpec, validation: Sequence[Example], weight: torch.Tensor) -> dict[str, float]:
    """Task metrics on the validation split ('validation/<metric>'), the one call into ptune.evaluation.scoring,
    in the caller's precision.

    For classification scored by rank, also 'validation/loss', read off the label scores: a classification
    target is its label word without EOS, tokenised as the scorer tokenises it (ptune.model.batching), so the
    gold label's summed log-likelihood is minus the row's target loss. That saves the separate teacher-forced
    pass, about half of each validation (equal to `_validation_loss` within rounding, tested)."""
    from ptune.evaluation.scoring import evaluate

    result = evaluate(base, spec, list(validation), prompt=weight, split="validation", progress=False)
    metrics = dict(result.metrics)
    loss = _loss_from_label_scores(base, spec, validation, result.label_scores)
    return metrics if loss is None else {"validation/loss": loss, **metrics}


def _loss_from_label_scores(base: BaseModel, spec: TaskSpec, examples: Sequence[Example],
                            scores: list[list[float]] | None) -> float | None:
    """Mean loss per target token from rank-mode label scores (n, L); None unless every target is a label word."""
    labels = list(spec.label_words or ())
    if scores is None or spec.kind != "classification" or len(scores) != len(examples) \
            or any(ex.target not in labels for ex in examples):
        return None
    from ptune.evaluation.scoring import label_target_ids

    sizes = [len(ids) for ids in label_target_ids(base, labels)]  # the ids each score summed over
    gold = [labels.index(ex.target) for ex in examples]
    return -sum(row[g] for row, g in zip(scores, gold, strict=True)) / max(sum(sizes[g] for g in gold), 1)


def _evaluate(base: BaseModel, spec: TaskSpec, validation: Sequence[Example], weight: torch.Tensor, cfg: TrainConfig,
              amp: torch.dtype | None) -> dict[str, float]:
    """Validation loss + task metrics for prompt `weight` (P, d), both in evaluation's precision (frozen weights
    cast once for the two); the loss pass runs only when the metrics did not already give the loss
    (generation tasks)."""
    with inference_precision(base.model, base.device, amp):
        metrics = _validate(base, spec, validation, weight)
        if "validation/loss" not in metrics:
            metrics = {"validation/loss": _validation_loss(base, spec, validation, weight, cfg.batch_size), **metrics}
    return metrics


def _track_best(state: TrainState, metrics: dict[str, float], key: str, patience: int) -> None:
    """Keep a copy of the prompt when `key` improves (strictly); stop after `patience` evals without."""
    if key not in metrics:
        raise KeyError(f"validation returned {sorted(metrics)}, without the primary metric {key!r}")
    value = float(metrics[key])
    if state.best_value is None or value > state.best_value:
        state.best_value, state.best_step, state.best_metrics = value, state.step, dict(metrics)
        state.best_weight = state.prompt.fold()  # (P, d)
        state.bad_evals = 0
    else:
        state.bad_evals += 1
        state.stopped_early = bool(patience) and state.bad_evals >= patience
