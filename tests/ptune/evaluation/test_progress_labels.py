"""Baseline passes name their approach and their place among all passes, in the bar and in the log lines,
so a report's dozen passes over the same split can be told apart and counted down."""

from __future__ import annotations

import logging

from ptune.evaluation.baseline import approach_words, baselines_on_two_splits
from tests.ptune.evaluation.eval_helpers import make_examples, make_spec


def test_each_baseline_pass_names_its_approach_draw_and_number(tiny_causal, caplog):
    caplog.set_level(logging.INFO, logger="ptune.evaluation.scoring")
    spec, rows = make_spec(max_source_tokens=256), make_examples()
    baselines_on_two_splits(tiny_causal, spec, rows * 3, rows[:4], rows[4:], k=1, draws=2, calibrate=True,
                            batch_size=4, progress=False)
    descs = list(dict.fromkeys(r.ptune_progress[0] for r in caplog.records if getattr(r, "ptune_progress", None)))
    assert f"{spec.name}/test [k-shot draw 2: content-free inputs for calibration]" in descs
    assert [d for d in descs if "content-free" not in d] == [  # no chat template here: 3 passes a split
        f"{spec.name}/test [baseline 1/6: zero-shot (+ calibrated)]",
        f"{spec.name}/test [baseline 2/6: k-shot draw 1 (+ calibrated)]",
        f"{spec.name}/test [baseline 3/6: k-shot draw 2 (+ calibrated)]",
        f"{spec.name}/validation [baseline 4/6: zero-shot (+ calibrated)]",
        f"{spec.name}/validation [baseline 5/6: k-shot draw 1 (+ calibrated)]",
        f"{spec.name}/validation [baseline 6/6: k-shot draw 2 (+ calibrated)]",
    ]


def test_approach_words():
    assert [approach_words(n) for n in ("zero_shot", "k_shot", "k_shot_3", "chat_zero_shot")] == [
        "zero-shot", "k-shot draw 1", "k-shot draw 3", "chat zero-shot"]
