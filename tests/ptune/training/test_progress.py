"""Training says how far it is: off a terminal (pytest's captured stderr is not one) a log line on
`ptune.training.progress` gives step/total, loss, lr, elapsed and ETA at the first step, every ~10 % and at the end."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

from ptune.training.progress import TrainProgress
from ptune.training.train import train_prompt
from tests.ptune.training.test_train import BASE_CFG, SPEC, TRAIN, VALID

LINE = re.compile(r"^train toy: step (\d+)/20 \(\d+%\), loss \d+\.\d{4}, lr \d\.\d\de[-+]\d\d, "
                  r"elapsed \d\d:\d\d, ETA \d\d:\d\d$")


def test_training_off_a_terminal_logs_step_total_loss_lr_and_eta(tiny_causal, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ptune.training.progress")
    cfg = replace(BASE_CFG, max_steps=20, eval_every=10, checkpoint_every=0)
    train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "ptune.training.progress"]
    assert lines and all(LINE.match(line) for line in lines), lines
    steps = [int(LINE.match(line).group(1)) for line in lines]
    assert steps[0] == 1 and steps[-1] == 20 and {2, 10, 18} <= set(steps)  # every 2 steps: 10 % of 20
    assert len(steps) == len(set(steps)) <= 11


def test_a_resumed_run_counts_its_eta_from_the_steps_it_ran(monkeypatch):
    progress = TrainProgress("toy", total=100, initial=60)  # resumed at step 60: 40 steps to go, a line per 4
    assert progress.every == 4
    info = type("Info", (), {"step": 70, "loss": 0.5, "lr": 0.3})()
    assert progress.line(info, elapsed=20.0).endswith("elapsed 00:20, ETA 01:00")  # 2 s a step, 30 steps left
    progress.close()
