"""The train stage as one library call, shared by `ptune train` (and so `dvc repro`) and the Prefect task.

`train_task` loads the splits, trains (resuming from `out_dir/checkpoint`), saves the prompt artifact to
`out_dir/prompt` and the training curve to `out_dir/train_curve.csv` (what `dvc plots` and the README show).
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ptune.artifacts import PromptMeta, save_prompt
from ptune.catalog import TaskSpec, get_task
from ptune.config import Params
from ptune.data import data_version, load_split
from ptune.models import BaseModel, load_base_model
from ptune.paths import runs_dir
from ptune.train import StepInfo, TrainResult, train_prompt


@dataclass(frozen=True)
class TrainedPrompt:
    result: TrainResult
    prompt_dir: Path  # out_dir/prompt: the artifact
    curve: Path  # out_dir/train_curve.csv


def prompt_meta(base: BaseModel, spec: TaskSpec, params: Params, metrics: dict[str, float]) -> PromptMeta:
    """What prompt.json records about a prompt trained for `spec` on `base` with `params`."""
    template = getattr(spec.formatter, "template", "") or spec.description
    return PromptMeta(spec.name, base.spec, base.fingerprint, init=params.train.init, label_words=spec.label_words,
                      template=template, train_config=params.train.to_dict(), data_version=data_version(spec.name),
                      metrics=dict(metrics))


def train_task(task: str, params: Params, *, base: BaseModel | None = None, out_dir: Path | None = None,
               callback: Callable[[StepInfo], None] | None = None) -> TrainedPrompt:
    """Train `task`'s prompt with `params.for_task(task)` settings; returns the artifact and curve paths."""
    params = params.for_task(task)
    spec = get_task(task, params)
    out_dir = Path(out_dir) if out_dir else runs_dir() / spec.name
    base = base or load_base_model(params.model, threads=params.train.threads)
    validation = load_split(spec.name, "validation")[: params.evaluate.max_examples or None]  # same cap as test
    result = train_prompt(base, spec, load_split(spec.name, "train"), validation, params.train, out_dir,
                          callback=callback)
    prompt_dir = save_prompt(out_dir / "prompt", result.prompt.weight.detach().cpu(),
                             prompt_meta(base, spec, params, result.best_metrics))
    return TrainedPrompt(result, prompt_dir, write_curve(result.history, out_dir / "train_curve.csv"))


def write_curve(history: list[StepInfo], path: Path) -> Path:
    """One CSV row per step: step, train/loss and, at evaluation steps, every validation metric (atomic)."""
    metric_names = sorted({k for info in history for k in (info.metrics or {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".curve.", suffix=".csv")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "train/loss", *metric_names])
        for info in history:
            metrics = info.metrics or {}
            writer.writerow([info.step, f"{info.loss:.6f}", *(_cell(metrics.get(m)) for m in metric_names)])
    os.replace(tmp, path)
    return path


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"
