"""Training and scoring commands: `ptune train`, `eval`, `report`, `predict` on one task."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ptune.cli.options import BaseOpt, ForceOpt, ParamsOpt, PromptOpt, SplitOpt, TaskArg, build_run

if TYPE_CHECKING:
    from ptune.evaluation.report import ReportPaths
    from ptune.pipeline import stages


def train_cmd(task: TaskArg, params: ParamsOpt = None,
              steps: Annotated[int | None, typer.Option("--steps", help="Override train.max_steps.")] = None,
              out: Annotated[Path | None, typer.Option("--out", help="Output dir (default outputs/TASK).")] = None,
              transfer_from: Annotated[str | None, typer.Option(
                  "--transfer-from", help="Start from TASK2's @champion prompt (auto: the most similar).")] = None,
              ensemble: Annotated[int, typer.Option("--ensemble", help="Train K prompts (seeds seed..seed+K-1), "
                                                    "evaluate them together, report.")] = 0,
              method: Annotated[str, typer.Option("--method", help="Ensemble: mean (of rank scores) | vote.")] = "mean",
              register: Annotated[bool, typer.Option("--register", help="Ensemble: register it as one version.")] = False,
              track: Annotated[bool, typer.Option("--track/--no-track", help="Log the run to MLflow (ptune/TASK); "
                                                  "`report` and `register` add to that run.")] = True,
              nproc: Annotated[int, typer.Option("--nproc", min=1, help="Train on N local processes, data-parallel "
                                                 "(NCCL on GPUs, gloo on CPU); train.batch_size stays the "
                                                 "global batch.")] = 1,
              ) -> None:
    """Train TASK's soft prompt on its prepared splits: OUT/prompt (artifact), resuming from OUT/checkpoint."""
    from ptune.pipeline import stages

    run = build_run(task, params, train={"max_steps": steps} if steps is not None else {})
    if out is not None:
        run = dataclasses.replace(run, paths=dataclasses.replace(run.paths, root=out))
    if nproc > 1:
        return record_training(task, train_on_ranks(run, nproc, track, transfer_from, ensemble))
    base = stages.load_base(run)
    if transfer_from:
        from ptune.studies.transfer import with_transfer

        run = with_transfer(run, base, transfer_from)
    if ensemble:
        from ptune.cli.ensemble import train_ensemble

        return train_ensemble(run, base, ensemble, method, register)
    record_training(task, stages.train(run, base, track=track))


def train_on_ranks(run: stages.TaskRun, nproc: int, track: bool, transfer_from: str | None,
                   ensemble: int) -> stages.Trained:
    """`ptune train --nproc N`: N local ranks, data-parallel (ptune.pipeline.ranks); one prompt, its recipe."""
    from ptune.errors import ConfigError
    from ptune.pipeline import ranks

    if transfer_from or ensemble:
        raise ConfigError(f"--nproc {nproc} trains one prompt from the task's recipe: leave out "
                          f"{'--transfer-from' if transfer_from else '--ensemble'}, or train with --nproc 1")
    if run.params.model_device_map != "none":  # each rank holds a whole model; a map would put them on the same GPUs
        raise ConfigError(f"--nproc {nproc} with model_device_map = {run.params.model_device_map!r}: data-parallel ranks "
                          f"each hold the whole model on their own device; set model_device_map: none, or use --nproc 1")
    return ranks.train_on_ranks(run, nproc, track=track)


def record_training(task: str, done: stages.Trained) -> None:
    """Close the MLflow run of a training, link the prompt to it and print the summary JSON."""
    from ptune.registry import run_link, tracking

    if done.run_id is not None:  # params, per-step curves, best validation metrics, prompt and curve files
        tracking.resume(task, done.run_id).finish(done.prompt_dir, done.metrics,
                                                  report_files=[done.curve, done.curve.with_suffix(".png")])
    run_link.record(done.prompt_dir, done.run_id)  # OUT/mlflow_run.json: report and register find the run
    typer.echo(json.dumps({"prompt": str(done.prompt_dir), "curve": str(done.curve), "mlflow_run": done.run_id,
                           "best_step": done.best_step,
                           "steps_run": done.steps_run, "resumed_from": done.resumed_from,
                           "seconds": round(done.seconds, 1), **done.metrics}, indent=2))


def eval_cmd(task: TaskArg, prompt: PromptOpt = None, split: SplitOpt = "test",
             mode: Annotated[str | None, typer.Option(help="rank | generate (default by task kind).")] = None,
             params: ParamsOpt = None, force: ForceOpt = False, base: BaseOpt = None) -> None:
    """Score a tuned prompt on a split; prints one JSON object {"<split>/<metric>": .., invalid_rate, n, seconds}."""
    from ptune.pipeline import stages

    run = build_run(task, params, model=base)
    weight, base = stages.trained_from_dir(run, prompt, force=force)
    res = stages.evaluate(run, base, weight, split=split, mode=mode)
    typer.echo(json.dumps({**res.metrics, f"{split}/invalid_rate": res.invalid_rate, f"{split}/n": res.n,
                           f"{split}/seconds": round(res.seconds, 3)}, indent=2))


def report_cmd(task: TaskArg, prompt: PromptOpt = None, split: SplitOpt = "test",
               params: ParamsOpt = None, force: ForceOpt = False, base: BaseOpt = None) -> None:
    """Tuned prompt vs zero-shot, k-shot, chat baselines: writes metrics/TASK.json and outputs/TASK/report/."""
    from ptune.pipeline import stages

    run = build_run(task, params, model=base)
    weight, base = stages.trained_from_dir(run, prompt, force=force)
    found = stages.baselines(run, base, split=split)
    tuned = stages.evaluate(run, base, weight, split=split, label="soft prompt")
    written = stages.report(run, tuned, found, weight.numel()).files
    stages.report_match.record(run.paths.report_dir, prompt or run.paths.prompt_dir, written.metrics)  # for register
    for name in ("markdown", "metrics", "chart", "predictions"):
        typer.echo(f"{name}: {getattr(written, name)}")
    if split == "test":  # the run's validation/* are the training curve's; a test report joins them
        log_report_to_run(task, prompt or run.paths.prompt_dir, written)
    typer.echo(written.markdown.read_text(encoding="utf-8"))


def log_report_to_run(task: str, prompt_dir: Path, written: ReportPaths) -> None:
    """The report's numbers and files on the MLflow run that trained the prompt (none: nothing to do). The
    report is already on disk, so an unreachable store is a warning: `ptune register` logs the numbers later."""
    from ptune.errors import RegistryError
    from ptune.registry import run_link

    try:
        run_id = run_link.log_report(task, prompt_dir, written.metrics, [written.markdown, written.metrics,
                                     written.chart], predictions=written.predictions)
    except RegistryError as exc:
        typer.echo(f"warning: the report was not logged to the prompt's MLflow run: {exc}", err=True)
        return
    if run_id is not None:
        typer.echo(f"mlflow_run: {run_id}")


def predict_cmd(task: TaskArg,
                text: Annotated[str, typer.Argument(help="Input: the task's first column, or the source with --raw.")],
                prompt: PromptOpt = None,
                raw: Annotated[bool, typer.Option("--raw", help="TEXT is already formatted (ends with the cue).")] = False,
                params: ParamsOpt = None, force: ForceOpt = False, base: BaseOpt = None) -> None:
    """Print the label (classification) or generated text for one input."""
    from ptune.data.spec import format_input
    from ptune.evaluation.scoring import predict
    from ptune.pipeline import stages

    run = build_run(task, params, model=base)
    weight, base = stages.trained_from_dir(run, prompt, force=force)
    typer.echo(predict(base, run.spec, [text if raw else format_input(run.spec, text)], weight)[0][0])


COMMANDS = {"train": train_cmd, "eval": eval_cmd, "report": report_cmd, "predict": predict_cmd}
