"""`ptune train TASK --ensemble K`: K prompts (seeds seed..seed+K-1) trained, scored together, reported."""

from __future__ import annotations

import json

import typer

from ptune.pipeline import stages


def train_ensemble(run: stages.TaskRun, base: object, k: int, method: str, register: bool) -> None:
    """Train the K members, evaluate them together on test beside the baselines, write the report (and
    register the ensemble as one version with `register`); prints one JSON object."""
    from ptune.studies import ensemble

    trained = ensemble.train_ensemble(run, base, k, method=method)
    found = ensemble.evaluate_ensemble(run, base, trained.directory)
    reported = ensemble.report_ensemble(run, found, stages.baselines(run, base), trained)
    out = {"ensemble": str(trained.directory), "report": str(reported.files.markdown), "k": k, "method": method,
           **found.ensemble.metrics, **ensemble.ensemble_metrics(found)}
    if register:
        registered = ensemble.register_ensemble(run, trained, reported, found)
        out.update(registered_model=registered.name, version=registered.version)
    typer.echo(json.dumps(out, indent=2))
