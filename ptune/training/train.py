"""Train one soft prompt on a frozen base model (Lester et al. 2021): only the prompt is optimised.

Loop: length-bucketed, dynamically padded batches whose order is a pure function of (seed, epoch);
loss = target_loss(base, shared_prompt_inputs(base, prompt.weight, **batch)) (the prompt's own pass runs once
per batch at batch size 1; same loss and gradient as prompt_inputs); validation every `eval_every` steps
(primary metric = first of spec.metrics, higher is better) with early stopping; the best prompt is kept.
Checkpoints go to `out_dir/checkpoint/` (see ptune.training.checkpoint) and a rerun resumes from them, reaching
the same final prompt as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ptune.config import TrainConfig
from ptune.data.spec import TaskSpec
from ptune.data.splits import Example
from ptune.errors import ConfigError, DataError
from ptune.fileio import sha256_text
from ptune.model.base import BaseModel
from ptune.model.batching import Encoded, bucketed_batches, collate, encode_pair
from ptune.model.precision import autocast, autocast_dtype
from ptune.model.soft_prompt import SoftPrompt, shared_prompt_inputs, target_loss
from ptune.training import checkpoint as ckpt
from ptune.training.history import StepInfo, TrainResult

log = logging.getLogger(__name__)

# Settings that may change between a run and its resumption without making the checkpoint unusable.
_RESUME_FREE = ("max_steps", "patience", "checkpoint_every", "threads", "device", "precision")


@dataclass
class _State:
    """Everything a checkpoint must restore."""

    prompt: SoftPrompt
    optimizer: torch.optim.Optimizer
    step: int = 0
    best_weight: torch.Tensor | None = None  # (P, d)
    best_step: int = 0
    best_value: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[StepInfo] = field(default_factory=list)


def train_prompt(base: BaseModel, spec: TaskSpec, train: Sequence[Example], validation: Sequence[Example], cfg: TrainConfig,
                 out_dir: Path, callback: Callable[[StepInfo], None] | None = None,
                 init_path: Path | None = None) -> TrainResult:
    """Train a soft prompt for `spec` on `train` (Examples), validating on `validation`; see module doc."""
    start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _resolve_device(base, cfg)
    amp = autocast_dtype(cfg.precision, device, base.n_params, "train.precision")
    items = _encode(base, spec, train)
    state = _new_state(base, spec, cfg, init_path, device)
    meta = _compat_key(base, spec, cfg, train, init_path)
    resumed_from = _resume(Path(out_dir) / "checkpoint", state, meta)
    order = _BatchOrder([len(it.source_ids) + len(it.target_ids) for it in items], cfg.batch_size, cfg.seed)
    bar = tqdm(total=cfg.max_steps, initial=state.step, desc=f"train {spec.name}", disable=None, leave=False)
    while not state.stopped_early and state.step < cfg.max_steps:
        batch = collate([items[i] for i in order(state.step)], base.tokenizer.pad_token_id, base.is_encoder_decoder)
        info = _step(base, spec, state, {k: v.to(device) for k, v in batch.items()}, validation, cfg, amp)
        last = state.stopped_early or state.step >= cfg.max_steps
        if cfg.checkpoint_every and (state.step % cfg.checkpoint_every == 0 or last):
            _save(Path(out_dir) / "checkpoint", state, meta)
        bar.update(1)
        bar.set_postfix(loss=f"{info.loss:.4f}", **({"best": f"{state.best_value:.4f}"} if state.best_value is not None else {}))
        if callback is not None:
            callback(info)
    bar.close()
    log.info("trained %s: %d steps, %.1f s in steps, %.1f s in validation", spec.name, state.step,
             sum(h.step_seconds for h in state.history), sum(h.validation_seconds or 0.0 for h in state.history))
    best = state.best_weight if state.best_weight is not None else state.prompt.weight.detach()
    best_step = state.best_step if state.best_weight is not None else state.step
    return TrainResult(SoftPrompt(best), best_step, dict(state.best_metrics), state.history, state.step,
                       time.perf_counter() - start, resumed_from, str(device),
                       str(amp).removeprefix("torch.") if amp else None)


def _step(base: BaseModel, spec: TaskSpec, state: _State, batch: dict[str, torch.Tensor], validation: Sequence[Example],
          cfg: TrainConfig, amp: torch.dtype | None) -> StepInfo:
    """One optimizer step, then validation (and best/early-stop bookkeeping) when it is due."""
    lr = _set_lr(state.optimizer, cfg, state.step)
    start = time.perf_counter()
    loss = _train_step(base, state, batch, cfg, amp)
    step_seconds, state.step = time.perf_counter() - start, state.step + 1
    metrics, validation_seconds = None, None
    if cfg.eval_every and validation and (state.step % cfg.eval_every == 0 or state.step == cfg.max_steps):
        start = time.perf_counter()
        metrics = _evaluate(base, spec, validation, state.prompt.weight.detach(), cfg, amp)
        validation_seconds = time.perf_counter() - start
        _track_best(state, metrics, f"validation/{spec.metrics[0]}", cfg.patience)
        log.info("%s step %d: loss %.4f, %s (validation %.1f s)", spec.name, state.step, loss, metrics,
                 validation_seconds)
    info = StepInfo(state.step, loss, metrics, lr, step_seconds, validation_seconds)
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


def _encode(base: BaseModel, spec: TaskSpec, examples: Sequence[Example]) -> list[Encoded]:
    """Tokenise every (source, target) once, with the one rule shared with scoring (ptune.model.batching)."""
    if not examples:
        raise DataError(f"task {spec.name!r}: the train split is empty, nothing to train on")
    return [encode_pair(base.tokenizer, ex.source, ex.target, encoder_decoder=base.is_encoder_decoder,
                        add_eos=spec.kind == "generation", max_source_tokens=spec.max_source_tokens)
            for ex in examples]


class _BatchOrder:
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


def _new_state(base: BaseModel, spec: TaskSpec, cfg: TrainConfig, init_path: Path | None, device: torch.device) -> _State:
    """Fresh prompt (fp32, on `device`) and an optimizer over the prompt only."""
    torch.manual_seed(cfg.seed)
    prompt = _initial_prompt(base, spec, cfg, init_path).to(device=device, dtype=torch.float32)
    prompt.weight.requires_grad_(True)
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor
        opt = Adafactor(prompt.parameters(), lr=cfg.lr, scale_parameter=cfg.adafactor_scale, relative_step=False,
                        warmup_init=False, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(prompt.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _State(prompt, opt)


def _set_lr(opt: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> float:
    """Constant lr, with linear warmup over the first `warmup_steps` steps (step is 0-based)."""
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


def _train_step(base: BaseModel, state: _State, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                amp: torch.dtype | None) -> float:
    """One optimizer step on the prompt; returns the batch loss."""
    with autocast(base.device, amp):
        loss = target_loss(base, shared_prompt_inputs(base, state.prompt.weight, **batch))  # prompt pass run once
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(state.prompt.parameters(), cfg.grad_clip)
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    return float(loss.item())


@torch.no_grad()
def _validation_loss(base: BaseModel, spec: TaskSpec, examples: Sequence[Example], weight: torch.Tensor, batch_size: int,
                     amp: torch.dtype | None) -> float:
    """Mean loss per target token over `examples`, with prompt `weight` (P, d)."""
    items = _encode(base, spec, examples)
    total, count = 0.0, 0
    for i in range(0, len(items), batch_size):
        batch = {k: v.to(base.device) for k, v in collate(items[i:i + batch_size], base.tokenizer.pad_token_id,
                                                           base.is_encoder_decoder).items()}
        n = int((batch["labels"] != -100).sum())
        with autocast(base.device, amp):
            loss = target_loss(base, shared_prompt_inputs(base, weight, **batch))
        total, count = total + float(loss.float()) * n, count + n
    return total / max(count, 1)


def _validate(base: BaseModel, spec: TaskSpec, validation: Sequence[Example], weight: torch.Tensor,
              amp: torch.dtype | None) -> dict[str, float]:
    """Task metrics on the validation split ('validation/<metric>'), the one call into ptune.evaluation.scoring."""
    from ptune.evaluation.scoring import evaluate

    with autocast(base.device, amp):
        return dict(evaluate(base, spec, list(validation), prompt=weight, split="validation", progress=False).metrics)


def _evaluate(base: BaseModel, spec: TaskSpec, validation: Sequence[Example], weight: torch.Tensor, cfg: TrainConfig,
              amp: torch.dtype | None) -> dict[str, float]:
    """Validation loss + task metrics for prompt `weight` (P, d)."""
    metrics = {"validation/loss": _validation_loss(base, spec, validation, weight, cfg.batch_size, amp)}
    metrics.update(_validate(base, spec, validation, weight, amp))
    return metrics


def _track_best(state: _State, metrics: dict[str, float], key: str, patience: int) -> None:
    """Keep a copy of the prompt when `key` improves (strictly); stop after `patience` evals without."""
    if key not in metrics:
        raise KeyError(f"validation returned {sorted(metrics)}, without the primary metric {key!r}")
    value = float(metrics[key])
    if state.best_value is None or value > state.best_value:
        state.best_value, state.best_step, state.best_metrics = value, state.step, dict(metrics)
        state.best_weight = state.prompt.weight.detach().clone()  # (P, d)
        state.bad_evals = 0
    else:
        state.bad_evals += 1
        state.stopped_early = bool(patience) and state.bad_evals >= patience


def _compat_key(base: BaseModel, spec: TaskSpec, cfg: TrainConfig, train: Sequence[Example], init_path: Path | None) -> dict:
    """What must match for a checkpoint to be resumed: base, task, data, trajectory-shaping settings."""
    data = sha256_text(json.dumps([[ex.source, ex.target] for ex in train]))[:16]
    config = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}
    key = {"fingerprint": base.fingerprint, "task": spec.name, "data": data, "config": config,
           "init_path": str(init_path) if init_path else None}
    return json.loads(json.dumps(key))


def _save(ckpt_dir: Path, state: _State, meta: dict) -> None:
    """Write the whole training state (atomically, see ptune.training.checkpoint)."""
    opt_tensors, opt_json = ckpt.flatten_optimizer(state.optimizer.state_dict())
    rng_tensors, rng_json = ckpt.capture_rng()
    tensors = {"prompt": state.prompt.weight, **opt_tensors, **rng_tensors}
    if state.best_weight is not None:
        tensors["best_prompt"] = state.best_weight
    doc = {"meta": meta, "step": state.step, "best_step": state.best_step, "best_value": state.best_value,
           "best_metrics": state.best_metrics, "bad_evals": state.bad_evals, "stopped_early": state.stopped_early,
           "history": [asdict(h) for h in state.history], "optimizer": opt_json, "rng": rng_json}
    ckpt.write_checkpoint(ckpt_dir, tensors, doc)


def _resume(ckpt_dir: Path, state: _State, meta: dict) -> int | None:
    """Load a compatible checkpoint into `state`; returns its step, or None when starting fresh."""
    try:
        loaded = ckpt.read_checkpoint(ckpt_dir)
        if loaded is not None and tuple(loaded[0]["prompt"].shape) != tuple(state.prompt.weight.shape):
            raise ckpt.CorruptCheckpoint(f"prompt shape {tuple(loaded[0]['prompt'].shape)}, "
                                         f"expected {tuple(state.prompt.weight.shape)}")
    except (ckpt.CorruptCheckpoint, KeyError) as exc:
        aside = ckpt.set_aside(ckpt_dir)
        log.warning("checkpoint %s is corrupt (%s); moved it to %s and starting fresh", ckpt_dir / ckpt.FILE,
                    exc, aside)
        return None
    if loaded is None:
        return None
    tensors, doc = loaded
    if doc.get("meta") != meta:
        log.warning("checkpoint in %s was made with other settings, data or base model: starting fresh", ckpt_dir)
        return None
    with torch.no_grad():
        state.prompt.weight.copy_(tensors["prompt"])
    state.optimizer.load_state_dict(ckpt.unflatten_optimizer(tensors, doc["optimizer"]))
    best = tensors.get("best_prompt")
    state.best_weight = best.to(state.prompt.weight.device) if best is not None else None
    state.step, state.best_step, state.best_value = doc["step"], doc["best_step"], doc["best_value"]
    state.best_metrics, state.bad_evals, state.stopped_early = doc["best_metrics"], doc["bad_evals"], doc["stopped_early"]
    state.history = [StepInfo(**h) for h in doc["history"]]
    ckpt.restore_rng(tensors, doc["rng"])
    log.info("resumed from %s at step %d", ckpt_dir, state.step)
    return state.step
