"""Reference models: the ceiling a soft prompt is measured against (Lester et al. 2021, Figure 1).

`ptune reference TASK --method lora|full|multitask` trains the base model's own weights on TASK's prepared data,
with prompt tuning's label scoring (the loss is the target tokens' cross-entropy: the label word for
classification, the text for generation), step budget (`train.max_steps`) and batch size (`train.batch_size`):
    lora       PEFT LoRA r 8, alpha 16, dropout 0 on the attention query/value projections (q_proj/v_proj; T5: q/v)
    full       every base weight
    multitask  every base weight, on a mixture of several tasks' train splits (`mixture`), selected on TASK
AdamW (weight decay 0, constant lr, `train.grad_clip`), in `train.precision`, dropout off as in prompt tuning.
The model is validated on TASK's validation split every `train.eval_every` steps (and at the last), the best
one is kept (early stop after `train.patience` evaluations without a strict gain), and only that one is scored
once on test, with the scoring every prompt and baseline gets (`stages.evaluate`, prompt None). The base model
passed in is deep-copied and stays untouched; nothing is written to the model's files.

A reference run is an MLflow run of `ptune/<task>` tagged `ptune.kind=reference`; it is never registered as a
version of `ptune-<task>`, so it can never be a champion or enter promotion. Its numbers go to
outputs/<task>/reference/<method>.json, which the task report reads (ptune.evaluation.references).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ptune import paths
from ptune.data.splits import SPLITS
from ptune.errors import ConfigError, DataError, ModelError
from ptune.fileio import atomic_write_text
from ptune.model.base import BaseModel, load_base_model
from ptune.model.batching import collate
from ptune.model.precision import autocast, autocast_dtype, training_attention
from ptune.model.soft_prompt import prompt_inputs, target_loss
from ptune.pipeline import stages
from ptune.registry import tracking
from ptune.training.history import StepInfo, write_curve
from ptune.training.train import BatchOrder, encode_examples

METHODS = ("lora", "full", "multitask")
DEFAULT_LR = {"lora": 1e-3, "full": 1e-5, "multitask": 1e-5}
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0}
LORA_TARGETS = (("q_proj", "v_proj"), ("q", "v"))  # Llama/SmolLM/Qwen/GPT-NeoX-style names; T5's
KIND_TAG, METHOD_TAG = "ptune.kind", "ptune.reference_method"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceConfig:
    """How one reference model is trained; defaults come from the task's `train:` section."""

    method: str  # lora | full | multitask
    steps: int  # optimizer steps at most (train.max_steps or --steps)
    batch_size: int  # rows per step (train.batch_size or --batch-size)
    lr: float  # AdamW learning rate (DEFAULT_LR[method] or --lr)
    eval_every: int  # validate every N steps and at the last (0: only at the last)
    patience: int  # evaluations without a strict gain before stopping (0: never stop early)
    seed: int  # batch order, mixture sampling, LoRA init
    grad_clip: float = 1.0  # max global grad norm (0: none)

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"--method {self.method!r}: unknown (allowed: {', '.join(METHODS)})")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} = {getattr(self, name)}: must be >= 1")
        if not self.lr > 0:
            problems.append(f"lr = {self.lr}: must be > 0")
        if problems:
            raise ConfigError("reference model: " + "; ".join(problems))

    @classmethod
    def for_run(cls, run: stages.TaskRun, method: str, *, steps: int | None = None, batch_size: int | None = None,
                lr: float | None = None) -> ReferenceConfig:
        cfg = run.params.train
        return cls(method, cfg.max_steps if steps is None else steps, cfg.batch_size if batch_size is None else batch_size,
                   lr if lr is not None else DEFAULT_LR.get(method, 1e-5), cfg.eval_every, cfg.patience, cfg.seed,
                   cfg.grad_clip)


@dataclass(frozen=True)
class Reference:
    """A trained and tested reference model (the model itself is not kept)."""

    task: str
    method: str
    metrics: dict[str, float]  # test metrics, "test/<metric>"
    validation: dict[str, float]  # validation metrics of the kept model
    n: int  # test rows scored
    steps: int
    best_step: int
    seconds: float
    trainable: int
    mixture: dict[str, int]  # train rows per task
    path: Path  # outputs/<task>/reference/<method>.json
    run_id: str


def trainable_copy(base: BaseModel, method: str) -> BaseModel:
    """A deep copy of `base` whose weights train: LoRA adapters only, or every weight (full, multitask). A reference
    starts from the checkpoint's fp32 weights: a base held (partly) in bf16 (`model_dtype`) is loaded again."""
    if any(p.dtype != torch.float32 for p in base.model.parameters()):
        base = load_base_model(base.path or base.spec, device=base.device, threads=base.threads)
        model = base.model  # a fresh load: nothing else holds it
    else:
        model = copy.deepcopy(base.model)
    if method == "lora":
        model = _with_lora(model)
    else:
        for param in model.parameters():
            param.requires_grad_(True)
    return dataclasses.replace(base, model=model)


def _with_lora(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with LoRA layers injected in place (peft), the base weights frozen; the transformers model itself
    (not the PeftModel wrapper), so losses and scoring see the same class as for prompts."""
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    targets = next((list(t) for t in LORA_TARGETS if set(t) <= names), None)
    if targets is None:
        raise ModelError(f"--method lora: the model has no attention projections named "
                         f"{' or '.join('/'.join(t) for t in LORA_TARGETS)} to adapt (its linear layers: "
                         f"{', '.join(sorted(names)[:12])}); use --method full")
    peft_model = get_peft_model(model, LoraConfig(target_modules=targets, **LORA))
    return peft_model.base_model.model


def mixture(target: stages.TaskRun, runs: Sequence[stages.TaskRun], seed: int) -> list[tuple[stages.TaskRun, list]]:
    """(task, train rows) per task of the multitask mixture: examples-proportional with a cap (Raffel et al.
    2020), the cap being TASK's own train size, so each task brings min(its rows, TASK's rows), sampled with
    `seed`. TASK is always in; a task given twice counts once."""
    cap = len(target.examples("train"))
    mixed, seen = [], set()
    for run in [target, *runs]:
        if run.name in seen:
            continue
        seen.add(run.name)
        rows = run.examples("train")
        if len(rows) > cap:
            rows = random.Random(f"{seed}:{run.name}").sample(rows, cap)
        mixed.append((run, rows))
    return mixed


def mix_runs(run: stages.TaskRun, project, method: str, names: Sequence[str] | None) -> list[stages.TaskRun]:
    """The other tasks of a multitask mixture: `names` (default `run_tasks`) without TASK, each once. Empty for
    the other methods; `names` given with them, or no other task for multitask, is a ConfigError."""
    if method != "multitask":
        if names:
            raise ConfigError(f"mix is for method multitask, not {method}")
        return []
    chosen = list(names) if names else list(project.run_tasks)
    mix = [stages.TaskRun.build(name, project) for name in dict.fromkeys(chosen) if name != run.name]
    if not mix:
        raise ConfigError(f"method multitask: no other task to mix with {run.name!r}; list them in mix "
                          "(--mix, the form's `mix`) or params.yaml run_tasks")
    return mix


def check_prepared(runs: Sequence[stages.TaskRun]) -> None:
    """One DataError naming every task whose prepared splits are missing, with the commands to run."""
    missing = [run.name for run in runs if not all((paths.prepared_dir(run.name) / f"{s}.jsonl").exists()
                                                      for s in SPLITS)]
    if missing:
        commands = "; ".join(f"`ptune fetch {t} && ptune prepare {t}`" for t in missing)
        raise DataError(f"not prepared: {', '.join(missing)} (no data/prepared/<task>/ splits); run {commands} "
                        "first (or `dvc repro prepare@<task>`)")


def train_reference(run: stages.TaskRun, ref: BaseModel, cfg: ReferenceConfig, mixed: list[tuple[stages.TaskRun, list]],
                    callback=None) -> tuple[list[StepInfo], int, dict[str, float]]:
    """Train `ref`'s trainable weights in place on `mixed`; leave the best validated weights loaded.
    Returns (history, best step, best validation metrics)."""
    torch.manual_seed(cfg.seed)
    items = [item for task, rows in mixed for item in encode_examples(ref, task.spec, rows)]
    params = {n: p for n, p in ref.model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=0.0)
    amp = autocast_dtype(run.params.train.precision, ref.device, ref.n_params, "train.precision")
    order = BatchOrder([len(i.source_ids) + len(i.target_ids) for i in items], cfg.batch_size, cfg.seed)
    history, best = [], _Best(f"validation/{run.spec.metrics[0]}")
    for step in range(1, cfg.steps + 1):
        start = time.perf_counter()
        batch = {k: v.to(ref.device) for k, v in collate([items[i] for i in order(step - 1)], ref.tokenizer.pad_token_id,
                                                          ref.is_encoder_decoder).items()}
        with training_attention(ref.model, ref.device, amp):  # as prompt training: eager in CPU bf16 steps
            with autocast(ref.device, amp):
                loss = target_loss(ref, prompt_inputs(ref, None, **batch))
            loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        info = StepInfo(step, float(loss.item()), None, cfg.lr, time.perf_counter() - start)
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
            start = time.perf_counter()
            info.metrics = dict(stages.evaluate(run, ref, None, split="validation", progress=False).metrics)
            info.validation_seconds = time.perf_counter() - start
            best.update(step, info.metrics, params)
            log.info("%s reference (%s) step %d/%d: loss %.4f, %s (validation %.1f s)", run.name, cfg.method, step,
                     cfg.steps, info.loss, info.metrics, info.validation_seconds)
        history.append(info)
        if callback is not None:
            callback(info)
        if cfg.patience and best.bad >= cfg.patience:
            break
    best.restore(params)
    return history, best.step, best.metrics


@dataclass
class _Best:
    """The best validated weights so far (CPU copies of the trainable ones) and evaluations since a gain."""

    key: str  # "validation/<primary metric>", higher is better
    value: float | None = None
    step: int = 0
    metrics: dict = dataclasses.field(default_factory=dict)
    weights: dict = dataclasses.field(default_factory=dict)
    bad: int = 0

    def update(self, step: int, metrics: dict[str, float], params: dict[str, torch.nn.Parameter]) -> None:
        if self.value is None or metrics[self.key] > self.value:  # strictly better, as for prompts
            self.value, self.step, self.metrics, self.bad = metrics[self.key], step, dict(metrics), 0
            self.weights = {n: p.detach().to("cpu", copy=True) for n, p in params.items()}
        else:
            self.bad += 1

    @torch.no_grad()
    def restore(self, params: dict[str, torch.nn.Parameter]) -> None:
        for name, param in params.items():
            param.copy_(self.weights[name])


def run_reference(run: stages.TaskRun, base: BaseModel, cfg: ReferenceConfig, *,
                  mix: Sequence[stages.TaskRun] = (), command: str = "") -> Reference:
    """Train, select on validation and test one reference model; log it to MLflow (never registered) and
    write outputs/<task>/reference/<method>.json. `mix`: the other tasks of the multitask mixture."""
    check_prepared([run, *mix] if cfg.method == "multitask" else [run])
    if cfg.method != "multitask" and mix:
        raise ConfigError(f"--mix is for --method multitask, not {cfg.method}")
    started = time.perf_counter()
    mixed = mixture(run, mix, cfg.seed) if cfg.method == "multitask" else [(run, run.examples("train"))]
    ref = trainable_copy(base, cfg.method)
    trainable = sum(p.numel() for p in ref.model.parameters() if p.requires_grad)
    mlflow_run = _mlflow_run(run, base, cfg, {r.name: len(rows) for r, rows in mixed}, trainable)
    try:
        history, best_step, validation = train_reference(run, ref, cfg, mixed, callback=mlflow_run)
        tested = stages.evaluate(run, ref, None, split="test", progress=False)
        seconds = time.perf_counter() - started
        out = paths.reference_dir(run.name)
        done = Reference(run.name, cfg.method, dict(tested.metrics), validation, tested.n, len(history), best_step,
                         seconds, trainable, {r.name: len(rows) for r, rows in mixed}, out / f"{cfg.method}.json",
                         mlflow_run.run_id)
        curve = write_curve(history, out / f"{cfg.method}_curve.csv")
        _write(done, run, base, cfg, command)
        mlflow_run.finish(None, {**done.metrics, "test/n": done.n, "reference/seconds": seconds,
                                 "reference/best_step": best_step}, report_files=[done.path, curve])
    except BaseException:
        mlflow_run.fail()
        raise
    return done


def _mlflow_run(run: stages.TaskRun, base: BaseModel, cfg: ReferenceConfig, mixture_rows: dict[str, int],
                trainable: int) -> tracking.TrainingRun:
    settings = {**dataclasses.asdict(cfg), "reference_method": cfg.method, "trainable_params": trainable,
                "mixture": json.dumps(mixture_rows), **({"lora": json.dumps(LORA)} if cfg.method == "lora" else {})}
    params = tracking.training_params(run.name, base.spec, base.fingerprint, settings, run.data_version)
    name = tracking.default_run_name(run.name, base.spec, f"reference-{cfg.method}")
    mlflow_run = tracking.TrainingRun(run.name, params, run_name=name, kind="reference",
                                      tags={KIND_TAG: "reference", METHOD_TAG: cfg.method})
    mlflow_run.start()
    return mlflow_run


def _write(done: Reference, run: stages.TaskRun, base: BaseModel, cfg: ReferenceConfig, command: str) -> Path:
    record = {"task": done.task, "method": done.method, "metrics": done.metrics, "validation": done.validation,
              "n": done.n, "steps": done.steps, "max_steps": cfg.steps, "batch_size": cfg.batch_size,
              "best_step": done.best_step, "seconds": round(done.seconds, 3), "seed": cfg.seed, "lr": cfg.lr,
              "trainable_params": done.trainable, "mixture": done.mixture, "base_model": base.spec,
              "base_fingerprint": base.fingerprint, "data_version": run.data_version, "mlflow_run": done.run_id,
              "command": command, **({"lora": LORA} if cfg.method == "lora" else {})}
    return atomic_write_text(done.path, json.dumps(record, indent=2) + "\n")
