"""`ptune sweep TASK`: an Optuna search over the training recipe, chosen on the validation split only.

    run = TaskRun.build("rotten_tomatoes", project_params())
    result = run_sweep(run, budget_minutes=60)       # trials until the budget is spent
    # -> sweeps/rotten_tomatoes.yaml (best settings), MLflow parent run + one child run per trial

It searches lr (log scale), n_tokens, init, reparam and max_steps around the task's own `train:` settings
(`SearchSpace.around`) with the TPE sampler; each trial reports its validation score at every evaluation and
the median pruner stops one that is below the median of earlier trials at the same step, but not in the first
half of the trial's own max_steps (a curve at the one-class rate can jump late: docs/training.md) and not at its
last step (stopping then saves nothing and would drop a finished result). Only the train and
validation splits are read: the test split is never opened (tested). The study lives in `optuna.db` beside
the MLflow store; a rerun loads it, keeps its finished trials, and re-runs a trial a kill interrupted, from
that trial's checkpoint (outputs/<task>/sweep/<settings hash>/). One sweep per task at a time (file lock).
With a PostgreSQL storage (`storage=`, $PTUNE_OPTUNA_STORAGE) sweeps on several machines join one study and
one MLflow parent run instead (ptune.studies.sweep_study).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from ptune.config import TrainConfig
from ptune.errors import ConfigError
from ptune.fileio import atomic_write_text, sha256_text
from ptune.paths import project_dir
from ptune.pipeline import stages
from ptune.registry import tracking
from ptune.studies import sweep_runs, sweep_study
from ptune.studies.sweep_study import StudyStorage
from ptune.training.history import StepInfo
from ptune.training.train import train_prompt

log = logging.getLogger(__name__)
TPE_STARTUP_TRIALS = 4  # random trials before TPE models the results (Optuna's default, 10, outlasts most budgets)
_PARENT_ATTR, _RUN_ATTR = "mlflow_parent_run", "mlflow_run"


@dataclass(frozen=True)
class SearchSpace:
    """What a sweep tries: lr in [low, high] on a log scale, and one of each tuple's values."""

    lr: tuple[float, float]
    n_tokens: tuple[int, ...]
    init: tuple[str, ...]
    reparam: tuple[str, ...]
    max_steps: tuple[int, ...]

    @classmethod
    def around(cls, cfg: TrainConfig, classification: bool) -> SearchSpace:
        """Half, same and double the configured n_tokens and max_steps; lr over the optimizer's usual range."""
        lr = (0.01, 1.0) if cfg.optimizer == "adafactor" else (1e-4, 3e-2)
        tokens = tuple(sorted({max(1, cfg.n_tokens // 2), cfg.n_tokens, min(1000, cfg.n_tokens * 2)}))
        steps = tuple(sorted({max(1, cfg.max_steps // 2), cfg.max_steps, cfg.max_steps * 2}))
        inits = ("labels", "vocab", "random") if classification else ("vocab", "random")
        return cls(lr, tokens, inits, ("none", "residual"), steps)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {"lr": trial.suggest_float("lr", *self.lr, log=True),
                "n_tokens": trial.suggest_categorical("n_tokens", list(self.n_tokens)),
                "init": trial.suggest_categorical("init", list(self.init)),
                "reparam": trial.suggest_categorical("reparam", list(self.reparam)),
                "max_steps": trial.suggest_categorical("max_steps", list(self.max_steps))}


@dataclass(frozen=True)
class SweepResult:
    task: str
    study: str
    storage: str
    parent_run_id: str
    metric: str  # "validation/<metric>"
    best_value: float | None
    best_train: dict[str, Any]  # the best trial's train settings ({} when no trial finished)
    counts: dict[str, int]  # trials by state: complete, pruned, fail, running
    file: Path | None  # sweeps/<task>.yaml


def sweep_file(task: str) -> Path:
    return project_dir() / "sweeps" / f"{task}.yaml"


def run_sweep(run: stages.TaskRun, *, budget_minutes: float, n_trials: int | None = None, seed: int = 0,
              base=None, storage: str | None = None) -> SweepResult:
    """Trials until `budget_minutes` have passed (a started trial finishes) or `n_trials` ran in this call.
    `storage`: the Optuna storage URL (default $PTUNE_OPTUNA_STORAGE, else optuna.db beside the MLflow store)."""
    if not run.params.train.eval_every:
        raise ConfigError("train.eval_every = 0: a sweep selects on validation scores, set it > 0")
    where = StudyStorage.resolve(storage)
    space = SearchSpace.around(run.params.train, run.spec.kind == "classification")
    with sweep_study.exclusive(where, run.name):
        with sweep_study.setup(where):  # tables, study and parent run made once, however many processes join
            study = _load_study(run.name, where, seed)
            parent = _parent_run(study, run, space, where)
        base = base or stages.load_base(run)
        objective = _Objective(run, base, space, parent, study.study_name)
        try:  # a trial that fails numerically (RuntimeError) is recorded as FAIL and the sweep goes on
            study.optimize(objective, n_trials=n_trials, timeout=budget_minutes * 60, catch=(RuntimeError,),
                           callbacks=[lambda study, _trial: write_best(study, run, parent, where.shown)])
        except BaseException:
            _close_parent(study, parent, "FAILED")
            raise
        result = summarize(study, run, parent, where.shown)
        _close_parent(study, parent, "FINISHED", {f"best/{result.metric}": result.best_value}
                      if result.best_value is not None else {}, {"ptune.sweep_file": str(result.file)})
    return result


def _load_study(task: str, where: StudyStorage | str, seed: int) -> optuna.Study:
    """The task's study (created or loaded). Local: trials left RUNNING were cut by a kill (the file lock says
    no other sweep runs), so they are marked FAIL and queued again with their settings, to resume from their
    checkpoint. Shared: a RUNNING trial may be another worker's; heartbeats find the dead ones (`_retry`)."""
    where = where if isinstance(where, StudyStorage) else StudyStorage.resolve(where)
    name = f"ptune-sweep-{task}"
    storage = sweep_study.optuna_storage(where, on_stale=_retry)
    probe = sweep_study.create_or_load(name, storage)
    offset = len(probe.trials) + (sweep_study.join(probe) if where.shared else 0)  # no two workers share a seed
    sampler = optuna.samplers.TPESampler(seed=seed + offset, n_startup_trials=TPE_STARTUP_TRIALS)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2)  # when to ask it: _Pruning (per trial's own steps)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if not where.shared:
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(stale.number, state=TrialState.FAIL)
            _retry(study, stale)
    return study


def _retry(study: optuna.Study, stale: optuna.trial.FrozenTrial) -> None:
    """A trial cut by a kill (now FAIL): end its MLflow run as FAILED and queue its settings again."""
    log.warning("sweep %s: trial %d was interrupted; running its settings again", study.study_name, stale.number)
    if _RUN_ATTR in stale.user_attrs:
        sweep_runs.end_run(stale.user_attrs[_RUN_ATTR], "FAILED", tags={"ptune.trial_state": "interrupted"})
    study.enqueue_trial(stale.params, user_attrs={"retry_of": stale.number})


def _parent_run(study: optuna.Study, run: stages.TaskRun, space: SearchSpace, where: StudyStorage) -> str:
    """The study's MLflow parent run: made by the first process (under `sweep_study.setup`), joined or
    reopened by every later one."""
    parent = study.user_attrs.get(_PARENT_ATTR)
    if parent:
        sweep_runs.reopen_parent(parent)
        return parent
    logged = {**{f"space.{k}": v for k, v in dataclasses.asdict(space).items()}, "study": study.study_name,
              "storage": where.shown, "base_model": run.params.model}
    parent = sweep_runs.start_parent(run.name, study.study_name, logged)
    study.set_user_attr(_PARENT_ATTR, parent)
    return parent


def _close_parent(study: optuna.Study, parent: str, status: str, metrics: dict[str, float] | None = None,
                  tags: dict[str, str] | None = None) -> None:
    """Log the sweep's result on its parent run; end the run unless other workers still run trials (the last
    one out ends it)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    sweep_runs.end_run(parent, None if running else status, metrics or {}, tags or {})


class _Objective:
    """One trial: train with the suggested settings (validation only), as an MLflow child run; its value is
    the best validation score. Intermediate scores go to the pruner."""

    def __init__(self, run: stages.TaskRun, base, space: SearchSpace, parent: str, study: str) -> None:
        self.run, self.base, self.space, self.parent, self.study = run, base, space, parent, study
        self.train, self.validation = run.examples("train"), run.examples("validation")  # never "test"
        self.metric = f"validation/{run.spec.metrics[0]}"
        self.data = "train+validation:" + sha256_text(json.dumps([[e.source, e.target] for e in
                                                                  (*self.train, *self.validation)]))[:16]

    def __call__(self, trial: optuna.Trial) -> float:
        cfg = dataclasses.replace(self.run.params.train, **self.space.suggest(trial))
        logged = tracking.training_params(self.run.name, self.base.spec, self.base.fingerprint, cfg.to_dict(), self.data)
        worker = sweep_study.worker_id()
        child = sweep_runs.child_run(self.run.name, self.parent, self.study, trial.number, logged, worker)
        trial.set_user_attr(_RUN_ATTR, child.run_id)
        trial.set_user_attr("worker", worker)
        out = self.run.paths.root / "sweep" / sha256_text(json.dumps(cfg.to_dict(), sort_keys=True))[:12]
        try:
            result = train_prompt(self.base, self.run.spec, self.train, self.validation, cfg, out,
                                  callback=_Pruning(trial, self.metric, child, cfg.max_steps))
        except optuna.TrialPruned:
            child.flush()
            sweep_runs.end_run(child.run_id, "KILLED", tags={"ptune.trial_state": "pruned"})
            raise
        except BaseException:
            child.fail()
            raise
        child.flush()
        sweep_runs.end_run(child.run_id, "FINISHED", result.best_metrics,
                           {"ptune.trial_state": "complete", "ptune.best_step": result.best_step})
        trial.set_user_attr("best_step", result.best_step)
        return float(result.best_metrics[self.metric])


class _Pruning:
    """Training callback of a trial: every step to its MLflow run, every validation score to Optuna. The pruner
    is asked from half the trial's `max_steps` on, and not at its last step."""

    def __init__(self, trial: optuna.Trial, metric: str, child: tracking.TrainingRun, max_steps: int) -> None:
        self.trial, self.metric, self.child, self.max_steps = trial, metric, child, max_steps

    def __call__(self, info: StepInfo) -> None:
        self.child(info)
        if info.metrics and self.metric in info.metrics:
            value = float(info.metrics[self.metric])
            self.trial.report(value, info.step)
            if self.max_steps / 2 <= info.step < self.max_steps and self.trial.should_prune():
                raise optuna.TrialPruned(f"step {info.step}: {self.metric} {value:.4f} below the median")


def summarize(study: optuna.Study, run: stages.TaskRun, parent: str, storage: str,
              file: Path | None = None) -> SweepResult:
    """Where the study stands: trial counts by state and the best trial's train settings. `storage`: the
    storage URL to show (no password)."""
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in
              (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    best = study.best_trial if counts["complete"] else None
    settings = dict(best.params) if best else {}
    path = file or (sweep_file(run.name) if best else None)
    return SweepResult(run.name, study.study_name, storage, parent,
                       f"validation/{run.spec.metrics[0]}", best.value if best else None, settings, counts,
                       path if path and path.is_file() else None)


def write_best(study: optuna.Study, run: stages.TaskRun, parent: str, storage: str) -> Path | None:
    """sweeps/<task>.yaml: the best trial's settings as a `train:` section params.yaml can include
    (`task_overrides: {<task>: {file: sweeps/<task>.yaml}}`), and a `sweep:` note on where they came from."""
    result = summarize(study, run, parent, storage, file=sweep_file(run.name))
    if result.best_value is None:
        return None
    note = {"task": run.name, "study": result.study, "storage": result.storage, "metric": result.metric,
            "best_value": round(result.best_value, 6), "best_trial": study.best_trial.number,
            "trials": result.counts, "mlflow_parent_run": parent, "base_model": run.params.model,
            "written": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    head = (f"# Best training settings for {run.name}, found by `ptune sweep` (Optuna TPE, validation split only).\n"
            f"# Use them from params.yaml:  task_overrides: {{{run.name}: {{file: sweeps/{run.name}.yaml}}}}\n")
    body = yaml.safe_dump({"sweep": note, "train": result.best_train}, sort_keys=False)
    return atomic_write_text(result.file or sweep_file(run.name), head + body)
