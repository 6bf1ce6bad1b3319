"""The pipeline, one function per step, on one `TaskRun` built once per task.

The CLI (and so `dvc repro`), the Prefect tasks and the benches call these functions and add only their own
concern (argument parsing and exit codes; retries, caching, artifacts and logs; timing). Nothing else
re-resolves a task name, re-applies `task_overrides` or repeats the glue between the steps:

    run = TaskRun.build("rotten_tomatoes", project_params())
    fetch(run); prepare(run); validate(run)                  # data: raw -> prepared -> checked
    base = load_base(run)
    trained = train(run, base, track=True)                   # prompt artifact (+ MLflow run)
    written = report(run, evaluate(run, base, trained.prompt), baselines(run, base), trained.trainable)
    registered = register(run, trained, written)             # a version of ptune-<task>
    decision = promote(run, registered.version, base)        # @champion only if it wins
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ptune import paths
from ptune.data import splits, validation
from ptune.data.spec import input_template
from ptune.errors import ArtifactError
from ptune.evaluation import interpret, references
from ptune.evaluation import report as report_format
from ptune.evaluation.analysis import analyse, paired_results
from ptune.evaluation.baseline import BaselineResults, baselines_on_two_splits, trainable_params
from ptune.evaluation.scoring import EvalResult
from ptune.evaluation.scoring import evaluate as score
from ptune.fileio import check_replaceable
from ptune.model.artifacts import PROMPT_DIR, PromptMeta, load_prompt, save_prompt
from ptune.model.base import BaseModel, load_held_model
from ptune.model.precision import autocast_dtype, held_dtypes, inference_precision
from ptune.pipeline.task_run import RunPaths, TaskRun  # noqa: F401  (re-exported: callers use stages.TaskRun)
from ptune.registry import model_card, model_registry, promotion, report_match, run_link, run_status, tracking
from ptune.registry.loading import load_prompt_with_base, same_spec
from ptune.training.history import StepInfo, plot_curve, write_curve
from ptune.training.train import train_prompt

Callback = Callable[[StepInfo], None]


# ---- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    counts: dict[str, int]  # rows per split
    data_version: str
    dropped: dict = dataclasses.field(default_factory=dict)  # total, dropped, by_reason, conflicts (row_checks)


def fetch(run: TaskRun) -> Path:
    """data/raw/<task>.jsonl from the task's source."""
    return splits.fetch(run.spec)


def prepare(run: TaskRun) -> Prepared:
    """data/prepared/<task>/: formatted, deduplicated, split and capped (`data:` settings)."""
    return Prepared(splits.prepare(run.spec, run.params.data), run.data_version, splits.dropped_report(run.name))


def validate(run: TaskRun) -> dict:
    """The Great Expectations suite built from the spec, on every split; raises ValidationFailed."""
    return validation.validate(run.spec, run.params.data)


# ---- model ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trained:
    """A trained prompt: on disk at `prompt_dir`, in memory as `prompt` (P, d), and how training went."""

    task: str
    prompt: torch.Tensor
    prompt_dir: Path
    curve: Path
    best_step: int
    steps_run: int
    seconds: float
    resumed_from: int | None
    meta: PromptMeta  # what prompt.json says (base model identity, train config, data version, metrics)
    run_id: str | None = None  # the open MLflow run when trained with track=True

    @property
    def metrics(self) -> dict[str, float]:
        """Best validation metrics."""
        return dict(self.meta.metrics)

    @property
    def trainable(self) -> int:
        return trainable_params(self.prompt)


def load_base(run: TaskRun) -> BaseModel:
    """The frozen base model `model:` names, held in `model_dtype`, with the thread count `train.threads` asks for.
    `auto`: the linear layers' weights in bf16 when training and evaluation both compute in bf16 (the numbers
    autocast gives over fp32 weights, at less time and memory: `hold_matmul_weights`), else fp32."""
    params = run.params
    policies = {"train.precision": params.train.precision, "evaluate.precision": params.evaluate.precision}
    return load_held_model(params.model, params.model_dtype, policies, threads=params.train.threads,
                           quantize=params.model_quantize, device_map=params.model_device_map)


def train(run: TaskRun, base: BaseModel, *, callback: Callback | None = None, track: bool = False,
          run_name: str | None = None, tags: dict[str, str] | None = None) -> Trained:
    """Train the prompt (resuming from `run.checkpoint`); write the artifact and the curve. With `track`,
    steps go to a new MLflow run (`run_name`, `tags`), left open for `register` (else FAILED or KILLED)."""
    check_replaceable(run.paths.prompt_dir, PROMPT_DIR)  # refuse a folder holding other files before, not after
    mlflow_run = _training_run(run, base, run_name, tags) if track else None
    steps = _chain(mlflow_run, callback)
    try:
        result = train_prompt(base, run.spec, run.examples("train"), run.examples("validation"), run.params.train,
                              run.paths.root, callback=steps, checkpoint=run.checkpoint)
        if mlflow_run is not None:
            mlflow_run.flush()
    except BaseException as exc:  # KILLED on SIGTERM / Ctrl-C, else FAILED
        run_status.end_failed(mlflow_run.run_id if mlflow_run is not None else None, exc)
        raise
    weight, meta = result.prompt.weight.detach().cpu(), _prompt_meta(run, base, result.best_metrics)
    prompt_dir = save_prompt(run.paths.prompt_dir, weight, meta, base_hidden=base.hidden_size)
    plot_curve(result.history, run.paths.root / "train_curve.png")
    interpret.write_interpretation(base, weight, run.spec.label_words, run.paths.root / "interpretation", task=run.name)
    return Trained(run.name, weight, prompt_dir, write_curve(result.history, run.paths.curve), result.best_step,
                   result.steps_run, result.seconds, result.resumed_from, meta,
                   mlflow_run.run_id if mlflow_run else None)


def _training_run(run: TaskRun, base: BaseModel, name: str | None, tags: dict | None) -> tracking.TrainingRun:
    run_status.end_stale_runs(run.name)  # runs of this task left RUNNING by a process that is gone: KILLED
    mlflow_run = tracking.TrainingRun(run.name, tracking.training_params(run.name, base.spec, base.fingerprint,
                                      {**run.params.train.to_dict(), "base_weights": held_dtypes(base.model)},
                                      run.data_version), run_name=name, tags={**run_status.process_tags(), **(tags or {})})
    tracking.log_training_data(mlflow_run.start(), run.name, run.data_version,
                               {s: run.examples(s) for s in splits.SPLITS}, paths.prepared_dir(run.name))
    return mlflow_run


def _chain(*callbacks: Callback | None) -> Callback:
    def each(info: StepInfo) -> None:
        for callback in callbacks:
            if callback is not None:
                callback(info)
    return each


def _prompt_meta(run: TaskRun, base: BaseModel, metrics: dict[str, float]) -> PromptMeta:
    """What prompt.json records about a prompt trained for `run` on `base`."""
    template = input_template(run.spec)
    return PromptMeta(run.name, base.spec, base.fingerprint, init=str(run.params.train.init),
                      label_words=run.spec.label_words, template=template, train_config=run.params.train.to_dict(),
                      data_version=run.data_version, metrics=dict(metrics), prompt_layout=base.prompt_layout)


# ---- evaluation ----------------------------------------------------------------------------------


def evaluate(run: TaskRun, base: BaseModel, prompt: torch.Tensor | None, *, split: str = "test",
             mode: str | None = None, progress: bool = True, label: str = "") -> EvalResult:
    """A prompt (P, d) on a split, capped at `evaluate.max_examples`, in `evaluate.precision`; `label` names the pass."""
    with eval_precision(run, base):
        return score(base, run.spec, run.examples(split), prompt, batch_size=run.params.evaluate.batch_size,
                     mode=mode, split=split, progress=progress, label=label)


def baselines(run: TaskRun, base: BaseModel, *, split: str = "test", progress: bool = True) -> BaselineResults:
    """Every hard-prompt baseline on `split` and on validation (`.validation`: the best baseline is chosen there)."""
    cfg, validation = run.params.evaluate, (run.examples("validation") if split != "validation" else [])
    with eval_precision(run, base):
        return baselines_on_two_splits(base, run.spec, run.examples("train"), run.examples(split), validation, k=cfg.k_shot,
                                       split=split, seed=run.params.data.seed, majority=True, draws=cfg.kshot_draws,
                                       batch_size=cfg.batch_size, progress=progress, calibrate=cfg.calibrate)


def eval_precision(run: TaskRun, base: BaseModel) -> contextlib.AbstractContextManager:
    """Evaluation's precision context for `run` (`evaluate.precision`): `inference_precision`."""
    policy = run.params.evaluate.precision
    return inference_precision(base.model, base.device,
                               autocast_dtype(policy, base.device, base.n_params, "evaluate.precision"))


@dataclass(frozen=True)
class Reported:
    tuned: EvalResult
    baselines: BaselineResults
    files: report_format.ReportPaths
    trainable: int
    stats: dict[str, float] = dataclasses.field(default_factory=dict)  # report_format.gate_metrics: for MLflow


def report(run: TaskRun, tuned: EvalResult, found: BaselineResults, trainable: int) -> Reported:
    """report.md, chart, predictions and metrics JSON: best baseline chosen on validation, test intervals, and
    the reference models of outputs/<task>/reference/ (`ptune reference`) with the gap the prompt closes."""
    results = {**found, report_format.TUNED: tuned}
    counts = {name: 0 for name in results} | {report_format.TUNED: trainable}
    split = next(iter(tuned.metrics)).split("/", 1)[0]
    cfg, examples = run.params.evaluate, run.examples(split)
    ceiling, skipped = references.read_rows(paths.reference_dir(run.name), run.data_version, split)
    analysis = analyse(run.spec, examples, results, found.validation or None, n_resamples=cfg.bootstrap_resamples,
                       seed=run.params.data.seed, threshold=cfg.degenerate_share)
    files = report_format.write_report(run.name, results, run.paths.report_dir, counts, examples=examples,
                                       notes={**found.notes, **interpret.report_note(run.paths.root),
                                              **({"reference models": "; ".join(skipped)} if skipped else {})},
                                       metrics_file=run.paths.metrics_file, analysis=analysis, curve=run.paths.curve,
                                       references=ceiling)
    stats = report_format.gate_metrics(report_format.flat_metrics(results, counts, analysis))
    return Reported(tuned, found, files, trainable, stats)


# ---- registry ------------------------------------------------------------------------------------


def register(run: TaskRun, trained: Trained, reported: Reported) -> model_registry.RegisteredPrompt:
    """Record test and baseline metrics in prompt.json, close the MLflow run with the report and validation
    files attached (a new run when training was not tracked), and register a version of `ptune-<task>`."""
    final = {**reported.tuned.metrics, **reported.stats, **tracking.baseline_metrics(reported.baselines)}
    meta = dataclasses.replace(trained.meta, metrics={**trained.metrics, **final})
    save_prompt(trained.prompt_dir, trained.prompt, meta)
    mlflow_run = tracking.resume(run.name, trained.run_id) if trained.run_id else tracking.run_for_prompt(meta)
    files = reported.files
    run_id = mlflow_run.finish(trained.prompt_dir, {**reported.tuned.metrics, **reported.stats}, reported.baselines,
                               report_files=[files.markdown, files.metrics, files.chart],
                               predictions=files.predictions, validation_dir=paths.validation_dir(run.name))
    registered = model_registry.register_prompt(run.name, trained.prompt_dir, run_id, f"test/{run.spec.metrics[0]}",
                                                spec=run.spec, example=example_row(run))
    model_card.publish_after_registration(
        run.name, registered.version, run_id, trained.prompt_dir, metrics_file=files.metrics,
        split_counts={s: len(run.examples(s, capped=False)) for s in ("train", "validation", "test")})
    return registered


def register_dir(run: TaskRun, prompt_dir: Path, require_report: bool = True) -> model_registry.RegisteredPrompt:
    """Register a prompt left on disk, in the MLflow run that trained it if any (registry.run_link), with the metrics
    of the report that scored it (by sha256, in <prompt dir>/../report/ or `run`'s report dir: report_match)."""
    found = report_match.find_report(run.name, prompt_dir, [Path(prompt_dir).parent / "report", run.paths.report_dir],
                                     required=require_report)
    return model_registry.register_dir(prompt_dir, run.spec, found.metrics, example=example_row(run), note=found.source,
                                       run_id=run_link.training_run(prompt_dir))


def example_row(run: TaskRun) -> dict[str, str] | None:  # the first prepared test row: the input example
    rows = run.examples("test") if (paths.prepared_dir(run.name) / "test.jsonl").exists() else []
    return {**rows[0].fields, "source": rows[0].source} if rows else None


def promote(run: TaskRun, version: str, base: BaseModel | None = None, *, dry_run: bool = False,
            reevaluate_candidate: bool = False) -> promotion.Decision:
    """Move @champion to `version` only if it passes `promote:` (docs/evaluation.md); the champion is re-scored.
    Each version is scored once per split, shared by the re-evaluation and the paired interval."""
    score = _version_scorer(run, base)
    return promotion.promote_if_better(run.name, version, evaluator=version_evaluator(run, base, score),
                                       dry_run=dry_run, reevaluate_candidate=reevaluate_candidate,
                                       gate=run.params.promote, compare=version_comparer(run, base, score))


Scorer = Callable[[str, str], EvalResult]  # (version, split) -> its evaluation on `run`'s split


def version_evaluator(run: TaskRun, base: BaseModel | None = None, score: Scorer | None = None) -> promotion.Evaluator:
    """Scores a registered version on a split of `run` (its cap), reusing `base` when the fingerprint matches."""
    score = score or _version_scorer(run, base)
    return lambda version, split: dict(score(version, split).metrics)


def version_comparer(run: TaskRun, base: BaseModel | None = None, score: Scorer | None = None) -> promotion.Comparer:
    """Paired bootstrap interval of (candidate - champion), both scored on the current split of `run`."""
    score = score or _version_scorer(run, base)
    return lambda candidate, champion, split: paired_results(
        run.spec, run.examples(split), score(candidate, split), score(champion, split), seed=run.params.data.seed,
        n_resamples=run.params.evaluate.bootstrap_resamples)


def _version_scorer(run: TaskRun, base: BaseModel | None) -> Scorer:
    """(version, split) -> EvalResult, each pair loaded and scored once (promotion asks for the same one twice)."""
    @functools.cache
    def score(version: str, split: str) -> EvalResult:
        loaded = load_prompt_with_base(f"models:/{model_registry.model_name(run.name)}/{version}", base=base)
        return evaluate(run, loaded.base, loaded.prompt, split=split, progress=False, label=f"version {version}")
    return lambda version, split: score(str(version), split)


def trained_from_dir(run: TaskRun, prompt_dir: Path | None = None, *, force: bool = False) -> tuple[torch.Tensor, BaseModel]:
    """(prompt, base) of a prompt on disk (default <root>/prompt), for `ptune eval/report/predict`; another task's
    prompt is refused unless `force`. The base is the run's model held as in training."""
    path = prompt_dir or run.paths.prompt_dir
    named = same_spec(load_prompt(path)[1].base_spec, run.params.model)  # a model prompt.json doesn't name: no load
    loaded = load_prompt_with_base(path, base=load_base(run) if named else None, base_spec=run.params.model)
    if loaded.meta.task != run.name and not force:
        raise ArtifactError(f"the prompt at {path} was trained for task {loaded.meta.task!r}, not {run.name!r}; "
                            "pass --force to use it anyway")
    return loaded.prompt, loaded.base

