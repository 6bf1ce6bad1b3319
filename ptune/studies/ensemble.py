"""Prompt ensembles as pipeline steps (Lester et al. 2021, §6): train K prompts with seeds seed..seed+K-1,
keep them as one ensemble artifact (`ptune.model.ensemble_artifact`), score them together in one batch
(`ptune.evaluation.ensemble`), report the ensemble beside the best single prompt and the mean of K, and
register the whole directory as one version of `ptune-<task>`.

    members = train_ensemble(run, base, k=3)                  # <root>/ensemble/member-<i>/..., <root>/ensemble_prompt
    found = evaluate_ensemble(run, base, members.directory)   # ensemble + each member, one pass
    reported = report_ensemble(run, found, stages.baselines(run, base), members)
    register_ensemble(run, members, reported, found)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ptune.errors import ArtifactError, ConfigError
from ptune.evaluation import ensemble as scoring
from ptune.evaluation.baseline import BaselineResults
from ptune.fileio import atomic_write_text, check_replaceable
from ptune.model.artifacts import PROMPT_DIR
from ptune.model.base import BaseModel
from ptune.model.ensemble_artifact import load_ensemble, save_ensemble
from ptune.pipeline import stages
from ptune.registry import model_card, model_registry, tracking

ENSEMBLE_DIR = "ensemble_prompt"  # <root>/ensemble_prompt: the ensemble artifact


@dataclass(frozen=True)
class TrainedEnsemble:
    directory: Path
    members: list[stages.Trained]

    @property
    def trainable(self) -> int:
        return sum(m.trainable for m in self.members)


def member_run(run: stages.TaskRun, i: int) -> stages.TaskRun:
    """Member i: seed + i, its own run dir (checkpoints, curve) under <root>/ensemble/member-<i>."""
    params = run.params.with_overrides("--ensemble", train={"seed": run.params.train.seed + i})
    paths = stages.RunPaths(run.paths.root / "ensemble" / f"member-{i}", run.paths.metrics_file)
    return dataclasses.replace(run, params=params, paths=paths)


def train_ensemble(run: stages.TaskRun, base: BaseModel, k: int, *, method: str = "mean",
                   callback: stages.Callback | None = None) -> TrainedEnsemble:
    """Train K prompts (each resumable like any prompt) and write them as one ensemble artifact."""
    if k < 2:
        raise ConfigError(f"--ensemble {k}: an ensemble needs at least 2 prompts")
    scoring.combine_check(method)
    check_replaceable(run.paths.root / ENSEMBLE_DIR, PROMPT_DIR)  # before K trainings, not after them
    members = [stages.train(member_run(run, i), base, callback=callback) for i in range(k)]
    directory = save_ensemble(run.paths.root / ENSEMBLE_DIR, [m.prompt for m in members], [m.meta for m in members],
                              method)
    return TrainedEnsemble(directory, members)


def evaluate_ensemble(run: stages.TaskRun, base: BaseModel, directory: Path, *, split: str = "test",
                      method: str | None = None) -> scoring.EnsembleResult:
    """The ensemble at `directory` and each member on a split (capped), in `evaluate.precision`."""
    found = load_ensemble(directory, expected_fingerprint=base.fingerprint)
    if found is None:
        raise ArtifactError(f"{directory} holds a single prompt, not an ensemble (no ensemble.json)")
    cfg = run.params.evaluate
    with stages.eval_precision(run, base):
        return scoring.evaluate_ensemble(base, run.spec, run.examples(split), found.prompts,
                                         method=method or found.method, batch_size=cfg.batch_size, split=split)


def report_ensemble(run: stages.TaskRun, found: scoring.EnsembleResult, baselines: BaselineResults,
                    trained: TrainedEnsemble) -> stages.Reported:
    """The task report with the ensemble as the tuned row, ensemble.md (members, best single, mean of K,
    ensemble) beside it and linked, and `ensemble/...` keys added to the metrics JSON."""
    table = scoring.summary_markdown(run.name, found)
    baselines.notes["ensemble"] = (f"the tuned row is an ensemble of {len(found.members)} prompts; best single "
                                   f"{found.best_single:.4f}, mean of {len(found.members)} {found.mean_single:.4f} "
                                   "([table](ensemble.md))")
    reported = stages.report(run, found.ensemble, baselines, trained.trainable)
    atomic_write_text(run.paths.report_dir / "ensemble.md", table)
    metrics = json.loads(reported.files.metrics.read_text(encoding="utf-8"))
    metrics.update(ensemble_metrics(found))
    atomic_write_text(reported.files.metrics, json.dumps(metrics, indent=2) + "\n")
    return reported


def ensemble_metrics(found: scoring.EnsembleResult) -> dict[str, float]:
    """Flat keys: ensemble/member_<i>/<key>, ensemble/best_single/<key>, ensemble/mean/<key>, ensemble/k."""
    key = found.primary
    out = {f"ensemble/member_{i}/{key}": round(m.metrics[key], 6) for i, m in enumerate(found.members)}
    return {**out, f"ensemble/best_single/{key}": round(found.best_single, 6),
            f"ensemble/mean/{key}": round(found.mean_single, 6), "ensemble/k": len(found.members)}


def register_ensemble(run: stages.TaskRun, trained: TrainedEnsemble, reported: stages.Reported,
                      found: scoring.EnsembleResult) -> model_registry.RegisteredPrompt:
    """Record the ensemble's test and baseline metrics in its prompt.json files, log a run with the report,
    and register the whole ensemble directory (K prompts + ensemble.json) as one version, with a card."""
    final = {**found.ensemble.metrics, **tracking.baseline_metrics(reported.baselines), **ensemble_metrics(found)}
    ens = load_ensemble(trained.directory)
    metas = [dataclasses.replace(m, metrics={**m.metrics, **final}) for m in ens.metas]
    save_ensemble(trained.directory, list(ens.prompts), metas, ens.method)
    mlflow_run = tracking.run_for_prompt(metas[0], ensemble_k=len(metas), ensemble_method=ens.method)
    files = reported.files
    run_id = mlflow_run.finish(trained.directory, found.ensemble.metrics, reported.baselines,
                               report_files=[files.markdown, files.metrics, files.chart,
                                             run.paths.report_dir / "ensemble.md"], predictions=files.predictions)
    registered = model_registry.register_prompt(run.name, trained.directory, run_id, f"test/{run.spec.metrics[0]}",
                                                spec=run.spec, example=stages.example_row(run))
    model_card.publish_after_registration(run.name, registered.version, run_id, trained.directory,
                                          metrics_file=files.metrics,
                                          interpretation_dir=trained.members[0].prompt_dir.parent / "interpretation")
    return registered
