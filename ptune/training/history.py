"""What a training records: one `StepInfo` per step, the `TrainResult`, and the curve CSV that
`dvc plots` and the README show (step, train/loss, validation metrics at evaluation steps)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ptune.fileio import atomic_path
from ptune.model.soft_prompt import SoftPrompt


@dataclass
class StepInfo:
    """One optimizer step: its 1-based number, train loss, lr, and validation metrics if it evaluated."""

    step: int
    loss: float
    metrics: dict[str, float] | None
    lr: float
    step_seconds: float = 0.0  # forward + backward + optimizer update
    validation_seconds: float | None = None  # the validation pass, on evaluation steps only
    skipped: bool = False  # the loss-spike guard skipped this step's update (train.spike_factor)
    skipped_steps: int = 0  # steps the guard skipped so far in this training, this one included


@dataclass
class TrainResult:
    """The best prompt (fp32) and how training went. `steps_run` counts all steps, resumed ones included."""

    prompt: SoftPrompt
    best_step: int
    best_metrics: dict[str, float]
    history: list[StepInfo]
    steps_run: int
    seconds: float  # wall time of this call
    resumed_from: int | None  # checkpoint step this call started from
    device: str = "cpu"  # where training ran
    autocast: str | None = None  # autocast dtype used ("bfloat16") or None

    @property
    def validation_seconds(self) -> float:
        """Time spent validating, over every recorded step (resumed ones included)."""
        return sum(h.validation_seconds or 0.0 for h in self.history)

    @property
    def step_seconds(self) -> float:
        """Time spent in optimizer steps, over every recorded step."""
        return sum(h.step_seconds for h in self.history)


def write_curve(history: list[StepInfo], path: Path) -> Path:
    """One CSV row per step: step, train/loss and, at evaluation steps, every validation metric (atomic)."""
    metric_names = sorted({k for info in history for k in (info.metrics or {})})
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "train/loss", *metric_names])
        for info in history:
            metrics = info.metrics or {}
            writer.writerow([info.step, f"{info.loss:.6f}", *(_cell(metrics.get(m)) for m in metric_names)])
    return path


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def plot_curve(history: list[StepInfo], path: Path) -> Path:
    """The curve as a PNG (train loss per step, validation metrics on a second axis): `dvc plots show`
    renders images offline, while its vega plots load their scripts from a CDN."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot([h.step for h in history], [h.loss for h in history], label="train/loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("train/loss")
    evaluated = [h for h in history if h.metrics]
    if evaluated:
        right = ax.twinx()
        for name in sorted(evaluated[-1].metrics):
            right.plot([h.step for h in evaluated], [h.metrics.get(name) for h in evaluated], "o-", label=name)
        right.set_ylabel("validation")
        right.legend(fontsize=8, loc="upper right")
    ax.set_title(f"training curve ({len(history)} steps)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
