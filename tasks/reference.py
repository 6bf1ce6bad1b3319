"""Reference models (ptune.studies.reference) as Prefect tasks: train one, then redraw the task report with it."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from prefect import get_run_logger, task

from ptune.model.base import BaseModel
from ptune.pipeline import stages
from ptune.registry.loading import load_prompt_with_base
from ptune.studies.reference import Reference, ReferenceConfig, run_reference
from tasks.policies import retry_unless
from tasks.training import MODEL_TASK


def cli_command(run: stages.TaskRun, cfg: ReferenceConfig, mix: Sequence[stages.TaskRun]) -> str:
    """The `ptune reference` command that trains the same model (recorded as `command` in the JSON)."""
    args = ["ptune", "reference", run.name, "--method", cfg.method, "--steps", str(cfg.steps),
            "--batch-size", str(cfg.batch_size), "--lr", repr(cfg.lr)]
    return shlex.join(args + (["--mix", ",".join(r.name for r in mix)] if mix else []))


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless(), **MODEL_TASK)
def train_reference_model(run: stages.TaskRun, base: BaseModel, cfg: ReferenceConfig,
                          mix: Sequence[stages.TaskRun] = ()) -> Reference:
    """Train, select on validation and test one reference model: an MLflow run tagged ptune.kind=reference
    (never registered) and outputs/<task>/reference/<method>.json. Nothing is checkpointed, so a retry starts
    over (the failed attempt's MLflow run ends FAILED); bad config or data is not retried."""
    return run_reference(run, base, cfg, mix=mix, command=cli_command(run, cfg, mix))


@task(**MODEL_TASK)
def rereport(run: stages.TaskRun, base: BaseModel) -> stages.Reported | None:
    """`ptune report TASK` again, so the task report gains the reference rows and their gap closed: the tuned
    prompt of outputs/<task>/prompt and the baselines scored on test. None, with a log line, when the task
    has no tuned prompt or no report there (or the prompt is another task's)."""
    logger = get_run_logger()
    prompt_dir, report = run.paths.prompt_dir, run.paths.report_dir / "report.md"
    if not (prompt_dir / "prompt.safetensors").is_file() or not report.is_file():
        logger.info("no tuned prompt and report in %s: the task report was not re-rendered; after training a "
                    "prompt, run `ptune report %s` to see the reference and the gap closed", run.paths.root, run.name)
        return None
    loaded = load_prompt_with_base(prompt_dir, base=base)
    if loaded.meta.task != run.name:
        logger.info("the prompt at %s was trained for %r: report not re-rendered; run `ptune report %s "
                    "--prompt DIR` with this task's prompt", prompt_dir, loaded.meta.task, run.name)
        return None
    tuned = stages.evaluate(run, loaded.base, loaded.prompt, progress=False)
    found = stages.baselines(run, loaded.base, progress=False)
    return stages.report(run, tuned, found, loaded.prompt.numel())
