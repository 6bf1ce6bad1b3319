"""The training state a checkpoint restores, how it is made fresh, how it is saved and resumed, and the
compatibility key a checkpoint must match to be resumed (`compat_key`).

`TrainState` holds the `TrainablePrompt` (raw prompt + optional residual MLP), the optimizer over all of
it, the lr scheduler, the step, the best prompt so far (folded, (P, d)), the history, and (with the
loss-spike guard on) the last known-good state to roll back to. Checkpoints hold every tensor (prompt, MLP,
optimizer, RNG, rollback state) and the scheduler's state (JSON), so a resumed run is bit-exact.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ptune.config import TrainConfig
from ptune.data.spec import TaskSpec
from ptune.data.splits import Example
from ptune.fileio import sha256_of, sha256_text
from ptune.model.artifacts import TENSOR_FILE
from ptune.model.base import BaseModel
from ptune.model.reparam import TrainablePrompt
from ptune.model.soft_prompt import SoftPrompt
from ptune.training import checkpoint as ckpt
from ptune.training.history import StepInfo
from ptune.training.store import Store

log = logging.getLogger(__name__)
_GOOD = "rollback."  # checkpoint key prefix of the spike guard's known-good state
# Settings that may change between a run and its resumption without making the checkpoint unusable.
# max_steps shapes the lr of a decaying schedule, so it is free only with schedule 'constant'.
RESUME_FREE = ("max_steps", "patience", "checkpoint_every", "checkpoint_uri", "threads", "device",
               "precision", "gradient_checkpointing")
_SCHEDULER_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


@dataclass
class TrainState:
    """Everything a checkpoint must restore."""

    prompt: TrainablePrompt
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int = 0
    best_weight: torch.Tensor | None = None  # (P, d), folded
    best_step: int = 0
    best_value: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[StepInfo] = field(default_factory=list)
    good: tuple[dict[str, torch.Tensor], dict] | None = None  # (prompt + MLP tensors, optimizer state)

    @property
    def skipped_steps(self) -> int:
        return sum(h.skipped for h in self.history)

    def remember_good(self) -> None:
        """Keep the current prompt, MLP and optimizer state: they just produced a normal loss (spike guard)."""
        tensors = {"prompt": self.prompt.raw, **self.prompt.extra_tensors()}
        self.good = ({k: v.detach().clone() for k, v in tensors.items()},
                     copy.deepcopy(self.optimizer.state_dict()))

    def roll_back(self) -> bool:
        """Restore the state `remember_good` kept (the one before the last applied update); False if none."""
        if self.good is None:
            return False
        tensors, opt_state = self.good
        with torch.no_grad():
            self.prompt.raw.copy_(tensors["prompt"])
        self.prompt.load_extra({k: v.clone() for k, v in tensors.items()})
        self.optimizer.load_state_dict(copy.deepcopy(opt_state))
        return True


def new_state(prompt: SoftPrompt, cfg: TrainConfig) -> TrainState:
    """A fresh state around `prompt` (fp32, on its device): the reparam MLP (cfg.reparam), the optimizer over
    prompt and MLP, and the lr schedule (cfg.schedule with cfg.warmup_steps, over cfg.max_steps)."""
    prompt.weight.requires_grad_(True)
    trainable = TrainablePrompt(prompt, cfg.reparam, cfg.reparam_bottleneck)
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor
        opt = Adafactor(trainable.parameters(), lr=cfg.lr, scale_parameter=cfg.adafactor_scale, relative_step=False,
                        warmup_init=False, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(trainable.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return TrainState(trainable, opt, make_scheduler(opt, cfg))


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """transformers' schedule (a LambdaLR): lr rises linearly from 0 over `warmup_steps`, then stays
    (constant) or decays to 0 at `max_steps` (linear, cosine). Stepped once per training step."""
    from transformers import get_scheduler

    return get_scheduler(_SCHEDULER_NAMES[cfg.schedule], opt, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=cfg.max_steps)


def _scheduler_json(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict:
    """The scheduler's state_dict as JSON (its lr lambdas are rebuilt from the config, not saved)."""
    state = dict(scheduler.state_dict())
    state["lr_lambdas"] = [None] * len(state.get("lr_lambdas", []))
    return json.loads(json.dumps(state))


def save(store: Store, state: TrainState, meta: dict) -> None:
    """Write the whole training state (atomically, see ptune.training.checkpoint and ptune.training.store)."""
    opt_tensors, opt_json = ckpt.flatten_optimizer(state.optimizer.state_dict())
    rng_tensors, rng_json = ckpt.capture_rng()
    tensors = {"prompt": state.prompt.raw, **state.prompt.extra_tensors(), **opt_tensors, **rng_tensors}
    if state.best_weight is not None:
        tensors["best_prompt"] = state.best_weight
    rollback_json = None
    if state.good is not None:
        good_opt_tensors, rollback_json = ckpt.flatten_optimizer(state.good[1])
        tensors.update({f"{_GOOD}{k}": v for k, v in {**state.good[0], **good_opt_tensors}.items()})
    doc = {"rollback_optimizer": rollback_json, "meta": meta, "step": state.step, "best_step": state.best_step, "best_value": state.best_value,
           "best_metrics": state.best_metrics, "bad_evals": state.bad_evals, "stopped_early": state.stopped_early,
           "history": [asdict(h) for h in state.history], "optimizer": opt_json, "rng": rng_json,
           "scheduler": _scheduler_json(state.scheduler)}
    store.write(tensors, doc)


def _read_or_set_aside(store: Store, shape: tuple[int, ...]) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The checkpoint in `store`, or None; a corrupt one (truncated, flipped, wrong shape) is moved aside with
    a warning, so training starts fresh instead of every retry failing."""
    try:
        loaded = store.read()
        if loaded is not None and tuple(loaded[0]["prompt"].shape) != shape:
            raise ckpt.CorruptCheckpoint(f"prompt shape {tuple(loaded[0]['prompt'].shape)}, expected {shape}")
    except (ckpt.CorruptCheckpoint, KeyError) as exc:
        aside = store.set_aside()
        log.warning("checkpoint %s is corrupt (%s); moved it to %s and starting fresh", store.where, exc,
                    aside)
        return None
    return loaded


def resume(store: Store, state: TrainState, meta: dict) -> int | None:
    """Load a compatible checkpoint from `store` into `state`; returns its step, or None when starting fresh.
    `meta` (`compat_key`) must equal the checkpoint's: another task, recipe, data, base or code never fits."""
    loaded = _read_or_set_aside(store, tuple(state.prompt.raw.shape))
    if loaded is None:
        return None
    tensors, doc = loaded
    if doc.get("meta") != meta:
        log.warning("checkpoint %s was made with other settings, data, base model or ptune code: "
                    "starting fresh", store.where)
        return None
    with torch.no_grad():
        state.prompt.raw.copy_(tensors["prompt"])
    state.prompt.load_extra({k: v.to(state.prompt.raw.device) for k, v in tensors.items()})
    state.optimizer.load_state_dict(ckpt.unflatten_optimizer(tensors, doc["optimizer"]))
    if "scheduler" in doc:
        state.scheduler.load_state_dict(doc["scheduler"])
    best = tensors.get("best_prompt")
    state.best_weight = best.to(state.prompt.raw.device) if best is not None else None
    state.step, state.best_step, state.best_value = doc["step"], doc["best_step"], doc["best_value"]
    state.best_metrics, state.bad_evals, state.stopped_early = doc["best_metrics"], doc["bad_evals"], doc["stopped_early"]
    state.history = [StepInfo(**h) for h in doc["history"]]
    if doc.get("rollback_optimizer") is not None:
        good = {k.removeprefix(_GOOD): v.to(state.prompt.raw.device) for k, v in tensors.items() if k.startswith(_GOOD)}
        state.good = ({k: v for k, v in good.items() if not k.startswith("optimizer.")},
                      ckpt.unflatten_optimizer(good, doc["rollback_optimizer"]))
    ckpt.restore_rng(tensors, doc["rng"])
    log.info("resumed from %s at step %d", store.where, state.step)
    return state.step


def compat_key(base: BaseModel, spec: TaskSpec, cfg: TrainConfig, train: Sequence[Example],
               init_path: Path | None) -> dict:
    """What must match for a checkpoint to be resumed: base, task, data, trajectory-shaping settings, ptune's
    code. The init prompt (init: file) counts by content, not path: a retry where it lies elsewhere resumes.
    """
    data = sha256_text(json.dumps([[ex.source, ex.target] for ex in train]))[:16]
    free = RESUME_FREE if cfg.schedule == "constant" else tuple(k for k in RESUME_FREE if k != "max_steps")
    config = {k: v for k, v in cfg.to_dict().items() if k not in free}
    config["init_path"] = _init_digest(cfg.init_path)
    key = {"fingerprint": base.fingerprint, "task": spec.name, "data": data, "config": config,
           "init_path": _init_digest(init_path), "code": ckpt.code_digest()}
    return json.loads(json.dumps(key))


def _init_digest(path: str | Path | None) -> str | None:
    """sha256 (16 hex) of an init prompt's tensors (a prompt artifact dir or its file), else the path."""
    if not path:
        return None
    file = Path(path) / TENSOR_FILE if Path(path).is_dir() else Path(path)
    return sha256_of(file)[:16] if file.is_file() else str(path)
