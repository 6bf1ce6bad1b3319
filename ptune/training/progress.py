"""Training progress where people look: a bar on a terminal, log lines everywhere else.

On a terminal (stderr a TTY) tqdm draws a bar: step/total, its ETA, and loss, lr and the best validation score
so far. Always, an INFO line on `ptune.training.progress` says the same (step/total, loss, lr, elapsed, ETA)
at the first step, every ~10 % of the steps (LOG_PARTS), at most LOG_SECONDS apart, and at the last step:
Prefect shows those lines in its run logs, and the CLI prints `ptune.*` INFO lines on stderr when stderr is not
a terminal (dvc repro, a pipe, a CI log), where the bar is off.
"""

from __future__ import annotations

import logging
import time

from tqdm.auto import tqdm

from ptune.training.history import StepInfo

log = logging.getLogger(__name__)

LOG_PARTS = 10  # log lines per training (every ~10 % of the steps)
LOG_SECONDS = 60.0  # ... and at least one a minute


class TrainProgress:
    """`update(info, best)` after each optimizer step of a run of `total` steps resumed at step `initial`;
    `quiet`: no bar (a data-parallel rank other than 0, which reports nothing)."""

    def __init__(self, task: str, total: int, initial: int = 0, quiet: bool = False) -> None:
        self.task, self.total, self.initial = task, total, initial
        self.every = max(1, -(-(total - initial) // LOG_PARTS))  # steps between log lines (ceil)
        self.start = self.last_logged = time.monotonic()
        self.bar = tqdm(total=total, initial=initial, desc=f"train {task}", disable=True if quiet else None,
                        leave=False)

    def update(self, info: StepInfo, best: float | None = None) -> None:
        """Advance the bar (postfix loss, lr, best) and log a line when one is due."""
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{info.loss:.4f}", lr=f"{info.lr:.2e}",
                             **({"best": f"{best:.4f}"} if best is not None else {}))
        now, done = time.monotonic(), info.step - self.initial
        if done == 1 or info.step >= self.total or done % self.every == 0 or now - self.last_logged >= LOG_SECONDS:
            self.last_logged = now
            log.info("%s", self.line(info, now - self.start))

    def line(self, info: StepInfo, elapsed: float) -> str:
        """"train <task>: step 30/300 (10%), loss 0.6931, lr 3.00e-01, elapsed 00:12, ETA 01:48"."""
        done = max(info.step - self.initial, 1)
        eta = elapsed / done * max(self.total - info.step, 0)
        return (f"train {self.task}: step {info.step}/{self.total} ({100 * info.step // max(self.total, 1)}%), "
                f"loss {info.loss:.4f}, lr {info.lr:.2e}, elapsed {tqdm.format_interval(elapsed)}, "
                f"ETA {tqdm.format_interval(eta)}")

    def close(self) -> None:
        self.bar.close()
