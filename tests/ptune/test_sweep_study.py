"""Sweeps on several machines (ptune/studies/sweep_study.py): two `ptune sweep` processes, each in its own
project folder with its own PTUNE_HOME, join one Optuna study in a throwaway PostgreSQL and one MLflow parent
run: trial numbers distinct, every trial in the one study (what the pruner and TPE read), every child run
under the one parent. Also: where the storage comes from, the race to create a study, and a dead worker's
trial found by its stopped heartbeat and queued again (while a live worker's RUNNING trial is left alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import psycopg
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from ptune.config import project_params
from ptune.errors import ConfigError
from ptune.pipeline import stages
from ptune.registry import tracking
from ptune.registry.locks import libpq_url
from ptune.studies import sweep as sweep_mod
from ptune.studies import sweep_runs, sweep_study
from ptune.studies.sweep_study import StudyStorage
from tests.postgres_support import throwaway_cluster
from tests.support import build_project, project_env, project_env_vars

REPO = Path(__file__).resolve().parents[2]
_TOGETHER = """
import sys, time
import optuna
import ptune.studies.sweep as s
real, calls = s._Objective.__call__, []
def together(self, trial):
    calls.append(trial.number)
    if len(calls) == 1:  # this process's first trial runs, then waits for the other machine's first one
        end = time.monotonic() + 300
        while len(trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))) < 2:
            assert time.monotonic() < end, "the other sweep never started a trial"
            time.sleep(0.05)
    return real(self, trial)
s._Objective.__call__ = together
sys.argv = ["ptune", *sys.argv[1:]]
from ptune.cli import main
main()
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with throwaway_cluster(tmp_path_factory.mktemp("pg") / "cluster") as started:
        yield started


@pytest.fixture
def database(cluster, request) -> str:
    """A fresh database for one test; its SQLAlchemy URL (password included)."""
    name = "optuna_" + request.node.name.lower().replace("[", "_").replace("]", "")[:40]
    cluster.create_database(name)
    return cluster.url(name)


def machine(root: Path, tiny_causal_dir: Path) -> Path:
    """One "machine": its own project folder with the toy task's data prepared."""
    build_project(root, tiny_causal_dir)
    with project_env(root):
        run = stages.TaskRun.build("toy", project_params())
        stages.fetch(run)
        stages.prepare(run)
    return root


def test_two_machines_join_one_study_and_one_parent_run(tmp_path, tiny_causal_dir, database, monkeypatch):
    """Each process's first trial waits (an event: two trials RUNNING in the study) for the other's, so the two
    processes certainly run trials at the same time."""
    mlflow_uri = f"sqlite:///{tmp_path / 'shared-mlruns.db'}"  # the team's MLflow: the only other thing shared
    plain = "postgresql://" + database.partition("://")[2]  # as a user types it; ptune adds the psycopg driver
    procs = []
    for name, storage_args, storage_env in (("m1", ["--storage", plain], {}),
                                            ("m2", [], {sweep_study.STORAGE_ENV: database})):
        root = machine(tmp_path / name, tiny_causal_dir)
        env = {**os.environ, **project_env_vars(root), "MLFLOW_TRACKING_URI": mlflow_uri, "PYTHONPATH": str(REPO),
               **storage_env}
        cmd = [sys.executable, "-c", _TOGETHER, "sweep", "toy", "--trials", "2", "--budget-minutes", "10",
               "--params", str(root / "params.yaml"), *storage_args]
        procs.append(subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    try:
        outputs = [proc.communicate(timeout=900) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-4000:]
    first, second = (json.loads(out[out.index("{"):]) for out, _ in outputs)
    assert first["study"] == second["study"] and first["mlflow_parent_run"] == second["mlflow_parent_run"]
    assert "***" in first["storage"] and database.split("@")[0] not in first["storage"] + second["storage"]

    study = optuna.load_study(study_name=first["study"], storage=database)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # each number once: no trial duplicated
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.intermediate_values for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    first_two = sorted(trials, key=lambda t: t.datetime_start)[:2]  # held together by _TOGETHER: they overlap
    assert {t.user_attrs["worker"] for t in first_two} == workers
    assert max(t.datetime_start for t in first_two) < min(t.datetime_complete for t in first_two)
    assert len(workers) == 2 and study.user_attrs[sweep_study.WORKERS_ATTR] == 2

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    parent = first["mlflow_parent_run"]
    children = sweep_runs.child_runs("toy", parent)
    assert sorted(int(c.data.tags["ptune.trial"]) for c in children) == [0, 1, 2, 3]
    assert {c.data.tags["ptune.worker"] for c in children} == workers
    sweeps = tracking.client().search_runs([tracking.ensure_experiment("toy")], "tags.`ptune.run_kind` = 'sweep'")
    assert [r.info.run_id for r in sweeps] == [parent]  # one parent, made by the first process only
    assert sweeps[0].info.status == "FINISHED"  # the last worker out ended it
    assert "***" in sweeps[0].data.params["storage"]


def test_storage_comes_from_the_option_then_the_environment_then_optuna_db(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.delenv(sweep_study.STORAGE_ENV, raising=False)
    assert StudyStorage.resolve() == StudyStorage(f"sqlite:///{tmp_path / 'optuna.db'}", shared=False)
    monkeypatch.setenv(sweep_study.STORAGE_ENV, "postgresql://ptune:secret@db:5432/optuna")
    env = StudyStorage.resolve()
    assert env == StudyStorage("postgresql+psycopg://ptune:secret@db:5432/optuna", shared=True)
    assert env.shown == "postgresql+psycopg://ptune:***@db:5432/optuna"
    assert StudyStorage.resolve("sqlite:///x.db") == StudyStorage("sqlite:///x.db", shared=False)
    with pytest.raises(ConfigError, match="expected sqlite:///<file> .* or postgresql://") as err:
        StudyStorage.resolve("mysql://ptune:secret@db/optuna")
    assert "secret" not in str(err.value)


def test_the_loser_of_the_race_to_create_a_study_loads_it(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    made = optuna.create_study(study_name="ptune-sweep-toy", storage=storage, direction="maximize")
    made.set_user_attr("mark", 1)  # another process created it first
    assert sweep_study.create_or_load("ptune-sweep-toy", storage).user_attrs == {"mark": 1}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                            "ignore:Heartbeat of storage is supposed to be used:UserWarning")
def test_a_dead_workers_trial_is_queued_again_and_a_live_ones_is_left(database, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    where = StudyStorage.resolve(database)
    study = sweep_mod._load_study("toy", where, seed=0)
    dead, live = (study.ask({"lr": FloatDistribution(0.01, 1.0, log=True)}) for _ in range(2))
    for trial in (dead, live):
        study._storage.record_heartbeat(trial._trial_id)
    with psycopg.connect(libpq_url(database), autocommit=True) as conn:  # `dead` stopped beating an hour ago
        conn.execute("UPDATE trial_heartbeats SET heartbeat = heartbeat - interval '1 hour' WHERE trial_id = %s",
                     (dead._trial_id,))
    again = sweep_mod._load_study("toy", where, seed=0)  # a worker joining: RUNNING trials may be others'
    assert [t.state for t in again.get_trials()] == [TrialState.RUNNING, TrialState.RUNNING]
    optuna.storages.fail_stale_trials(again)  # what Optuna runs before each trial of a heartbeat storage
    trials = again.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert trials[2].system_attrs["fixed_params"] == trials[0].params and trials[2].user_attrs["retry_of"] == 0
    optuna.storages.fail_stale_trials(again)
    assert len(again.get_trials()) == 3  # failed and queued once
