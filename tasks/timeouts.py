"""Per-step time budgets (Prefect `timeout_seconds`) from params.yaml `timeouts:` and the step's work.

A step that runs past its budget ends TimedOut, the flow's failure hook reports it, and the nightly goes on with
the next task instead of hanging on one. The estimates are deliberately generous (`margin`), so a budget only
fires on a step that is stuck or far slower than this hardware's measured speed.
"""

from __future__ import annotations

import math

from ptune.pipeline import stages

IO_STEPS = ("fetch", "prepare", "validate", "report", "register")


def _eval_examples(run: stages.TaskRun, split: str) -> int:
    cap = run.params.evaluate.max_examples
    try:
        return len(run.examples(split))
    except Exception:  # noqa: BLE001 - data not prepared yet: assume the cap (or a large split)
        return cap or 10_000


def work_seconds(run: stages.TaskRun, step: str) -> float:
    """Estimated seconds of `step` for this run, before the margin."""
    t, train = run.params.timeouts, run.params.train
    if step in IO_STEPS:
        return t.io_seconds
    if step == "load":
        return t.load_seconds
    if step == "train":
        evals = math.ceil(train.max_steps / train.eval_every) if train.eval_every else 0
        return (train.max_steps * t.step_seconds * train.batch_size / 8
                + evals * _eval_examples(run, "validation") * t.example_seconds)
    # promote re-evaluates the champion too; rereport (`ptune report` again) scores the prompt and the baselines
    passes = {"evaluate": 1, "baselines": 3, "promote": 2, "rereport": 4}[step]
    return passes * _eval_examples(run, "test") * t.example_seconds


def timeout_for(run: stages.TaskRun, step: str) -> float:
    """`timeout_seconds` of `step`: work x margin, at least min_seconds (I/O and loading: their fixed budget)."""
    t = run.params.timeouts
    if step in IO_STEPS or step == "load":
        return max(t.min_seconds, work_seconds(run, step))
    return max(t.min_seconds, work_seconds(run, step) * t.margin)


# A reference step costs a prompt step times this: full and multitask also compute every weight's gradient
# (about twice a prompt step's backward) and move AdamW over every weight; LoRA's adapters are tiny.
REFERENCE_STEP_COST = {"lora": 1.0, "full": 2.0, "multitask": 2.0}


def reference_seconds(run: stages.TaskRun, method: str, steps: int, batch_size: int, eval_every: int) -> float:
    """Estimated seconds of one reference model (ptune.studies.reference), before the margin: its steps as a training
    step (step_seconds x batch_size/8) x REFERENCE_STEP_COST, a validation every `eval_every` steps and at the
    last, and one test pass."""
    t = run.params.timeouts
    evals = (steps // eval_every if eval_every else 0) + 1
    return (steps * t.step_seconds * batch_size / 8 * REFERENCE_STEP_COST[method]
            + evals * _eval_examples(run, "validation") * t.example_seconds
            + _eval_examples(run, "test") * t.example_seconds)


def reference_timeout(run: stages.TaskRun, method: str, steps: int, batch_size: int, eval_every: int) -> float:
    """`timeout_seconds` of a reference model's training and test: work x margin, at least min_seconds."""
    t = run.params.timeouts
    return max(t.min_seconds, reference_seconds(run, method, steps, batch_size, eval_every) * t.margin)
