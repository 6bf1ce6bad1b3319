"""What the bench scripts share: the command line of a model-speed bench (integer knobs plus --tiny), one timed
soft-prompt step, and a scratch project with a prepared task for the task-level benches."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def bench_args(description: str, **defaults: int) -> argparse.Namespace:
    """Parse `--<name> N` for every default given, and `--tiny` (the tiny test model instead of SmolLM2)."""
    parser = argparse.ArgumentParser(description=description)
    for name, value in defaults.items():
        parser.add_argument(f"--{name}", type=int, default=value)
    parser.add_argument("--tiny", action="store_true", help="use the tiny test model instead of SmolLM2-135M")
    return parser.parse_args()


def scratch_project(prefix: str) -> Path:
    """A throwaway project directory (set as PTUNE_PROJECT_DIR), so a task-level bench never writes the repo's
    data/, outputs/ or MLflow store."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["PTUNE_PROJECT_DIR"] = str(scratch)
    return scratch


def prepared_task(task: str, params_file: Path):
    """(TaskRun, base model) of `task` under `params_file`, fetched and prepared in the current project."""
    from ptune.config import load_params
    from ptune.pipeline import stages

    run = stages.TaskRun.build(task, load_params(params_file))
    stages.fetch(run), stages.prepare(run)
    return run, stages.load_base(run)


def prompt_step(base, prompt, ids, backward: bool = True) -> float:
    """Seconds for one step of a (P, d) soft prompt in front of `ids` (B, T): forward + backward with the
    language-model loss on the text (prompt tuning: only `prompt` requires grad), or forward only. It runs under
    whatever autocast the caller set up."""
    import torch

    start = time.perf_counter()
    with torch.set_grad_enabled(backward):
        embeds = torch.cat([prompt.expand(ids.shape[0], -1, -1), base.embed(ids)], dim=1)  # (B, P+T, d)
        if backward:
            labels = torch.cat([torch.full((ids.shape[0], prompt.shape[0]), -100), ids], dim=1)  # (B, P+T)
            base.model(inputs_embeds=embeds, labels=labels).loss.backward()
            prompt.grad = None
        else:
            base.model(inputs_embeds=embeds)
    return time.perf_counter() - start
