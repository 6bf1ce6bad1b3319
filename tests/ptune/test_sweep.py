"""`ptune sweep` on a tiny model and the toy user task: validation only (the test split is never opened),
trials as MLflow child runs of one parent, the best settings in sweeps/<task>.yaml that params.yaml includes,
and a sweep killed mid-trial (a real process, ended by os._exit) resumes with its finished trials kept."""

from __future__ import annotations

import builtins
import io
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from ptune.config import project_params
from ptune.errors import ConfigError
from ptune.pipeline import stages
from ptune.registry import tracking
from ptune.studies import sweep as sweep_mod
from ptune.studies import sweep_runs
from tests.support import build_project, project_env, project_env_vars

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path, tiny_causal_dir):
    root = build_project(tmp_path / "project", tiny_causal_dir)
    with project_env(root):
        run = stages.TaskRun.build("toy", project_params())
        stages.fetch(run)
        stages.prepare(run)
        yield root


def _recording_opens(monkeypatch) -> list[str]:
    """Record every path opened through open/io.open/os.open from here on."""
    seen: list[str] = []
    for owner, name in ((builtins, "open"), (io, "open"), (os, "open")):
        real = getattr(owner, name)

        def spy(file, *args, _real=real, **kwargs):
            seen.append(os.fspath(file) if isinstance(file, str | os.PathLike) else repr(file))
            return _real(file, *args, **kwargs)
        monkeypatch.setattr(owner, name, spy)
    return seen


def _run() -> stages.TaskRun:
    return stages.TaskRun.build("toy", project_params())


def test_sweep_reads_validation_only_and_logs_child_runs(project, monkeypatch):
    test_file = project / "data" / "prepared" / "toy" / "test.jsonl"
    run = _run()
    opened = _recording_opens(monkeypatch)
    result = sweep_mod.run_sweep(run, budget_minutes=5, n_trials=3)
    monkeypatch.undo()
    assert any(p.endswith("validation.jsonl") for p in opened)  # the recorder sees the split reads
    assert not [p for p in opened if Path(p).name == test_file.name or "test.jsonl" in p]
    assert result.counts["complete"] + result.counts["pruned"] == 3 and result.best_value is not None
    children = sweep_runs.child_runs("toy", result.parent_run_id)
    assert len(children) == 3
    assert {c.data.tags["ptune.trial"] for c in children} == {"0", "1", "2"}
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children)
    assert all("validation/accuracy" in c.data.metrics and "train/skipped_steps" in c.data.metrics for c in children)
    assert {c.data.params["reparam"] for c in children} <= {"none", "residual"}
    parent = tracking.client().get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["best/validation/accuracy"] == result.best_value


def test_best_settings_file_is_included_by_params(project):
    result = sweep_mod.run_sweep(_run(), budget_minutes=5, n_trials=2)
    doc = yaml.safe_load(result.file.read_text())
    assert result.file == project / "sweeps" / "toy.yaml"
    assert doc["train"] == result.best_train and set(doc["train"]) == {"lr", "n_tokens", "init", "reparam", "max_steps"}
    assert doc["sweep"]["best_value"] == pytest.approx(result.best_value) and doc["sweep"]["metric"] == "validation/accuracy"
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["task_overrides"] = {"toy": {"file": "sweeps/toy.yaml", "train": {"seed": 7}}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    train = project_params().for_task("toy").train
    assert (train.lr, train.n_tokens, train.max_steps, str(train.init), train.reparam) == (
        doc["train"]["lr"], doc["train"]["n_tokens"], doc["train"]["max_steps"], doc["train"]["init"],
        doc["train"]["reparam"])
    assert train.seed == 7  # inline settings win over the file's


def test_bad_include_files_are_named(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "sweeps").mkdir()
    (project / "sweeps" / "bad.yaml").write_text("trian: {lr: 0.1}\ntrain: {lr: -1}\n")
    params["task_overrides"] = {"toy": {"file": "sweeps/bad.yaml"}, "other": {"file": "sweeps/missing.yaml"}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError) as err:
        project_params()
    text = str(err.value)
    assert "missing.yaml" in text and "file not found" in text and "trian" in text and "did you mean train" in text


_KILLER = """
import os, sys
import ptune.studies.sweep as s
real = s._Pruning.__call__
def die(self, info):
    real(self, info)
    if self.trial.number == 2 and info.step == 4:
        os._exit(9)  # like SIGKILL: no cleanup, no Optuna/MLflow bookkeeping
s._Pruning.__call__ = die
sys.argv = ["ptune", "sweep", "toy", "--trials", "1", "--budget-minutes", "5"]
from ptune.cli import main
main()
"""


def test_killed_sweep_resumes_with_finished_trials_kept(project, monkeypatch):
    first = sweep_mod.run_sweep(_run(), budget_minutes=5, n_trials=2)
    storage = sweep_runs.optuna_storage_url()
    assert storage == f"sqlite:///{project / 'optuna.db'}"  # next to mlruns.db
    before = {t.number: (t.state, t.value, t.params) for t in optuna.load_study(study_name=first.study,
                                                                                  storage=storage).trials}
    env = {**os.environ, **project_env_vars(project), "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-c", _KILLER], cwd=project, env=env, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == 9, killed.stderr[-3000:]
    study = optuna.load_study(study_name=first.study, storage=storage)
    assert study.trials[2].state == optuna.trial.TrialState.RUNNING  # what a kill leaves behind
    resumed_from = []
    real_train = sweep_mod.train_prompt
    monkeypatch.setattr(sweep_mod, "train_prompt", lambda *a, **k: resumed_from.append(
        (result := real_train(*a, **k)).resumed_from) or result)
    again = sweep_mod.run_sweep(_run(), budget_minutes=5, n_trials=1)
    trials = optuna.load_study(study_name=first.study, storage=storage).trials
    assert {n: (t.state, t.value, t.params) for n, t in enumerate(trials) if n < 2} == before  # kept as they were
    assert trials[2].state == optuna.trial.TrialState.FAIL
    assert trials[3].params == trials[2].params and trials[3].user_attrs["retry_of"] == 2
    assert resumed_from == [4]  # the interrupted trial went on from its checkpoint
    assert again.parent_run_id == first.parent_run_id
    children = sweep_runs.child_runs("toy", first.parent_run_id)
    assert [c.data.tags["ptune.trial"] for c in children] == ["0", "1", "2", "3"]
    assert children[2].info.status == "FAILED" and children[2].data.tags["ptune.trial_state"] == "interrupted"


def test_sweep_needs_validation(project):
    with pytest.raises(ConfigError, match="eval_every"):
        sweep_mod.run_sweep(stages.TaskRun.build("toy", project_params(), train={"eval_every": 0}), budget_minutes=1)


def test_search_space_is_built_around_the_task_settings():
    from ptune.config import TrainConfig

    space = sweep_mod.SearchSpace.around(TrainConfig(n_tokens=20, max_steps=150), classification=True)
    assert space.n_tokens == (10, 20, 40) and space.max_steps == (75, 150, 300) and "labels" in space.init
    assert "labels" not in sweep_mod.SearchSpace.around(TrainConfig(), classification=False).init
    assert sweep_mod.SearchSpace.around(TrainConfig(optimizer="adamw", lr=1e-3), True).lr[1] < 0.1


def test_pruning_waits_half_the_trial_and_spares_its_last_step(tmp_path):
    """A curve at chance early can jump late (docs/training.md, the presupposition_nli sweeps): a trial is not
    stopped in the first half of its own steps, is stopped below the median after that, and is never stopped at
    its last step (that would save nothing and drop a finished result)."""
    from ptune.training.history import StepInfo

    study = sweep_mod._load_study("toy", f"sqlite:///{tmp_path / 'optuna.db'}", seed=0)
    for value in (0.6, 0.7):  # two finished trials: the pruner's start-up
        done = study.ask()
        for step in (25, 50, 75, 100, 150):
            done.report(value, step)
        study.tell(done, value)

    def evaluate(max_steps: int, steps: tuple[int, ...]) -> list[int]:
        """Feed a trial 0.1 at each step; the steps it got through before being pruned."""
        trial, seen = study.ask(), []
        callback = sweep_mod._Pruning(trial, "validation/accuracy", lambda info: None, max_steps)
        try:
            for step in steps:
                callback(StepInfo(step=step, loss=1.0, metrics={"validation/accuracy": 0.1}, lr=0.1))
                seen.append(step)
        except optuna.TrialPruned:
            pass
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return seen

    assert evaluate(150, (25, 50, 75, 100)) == [25, 50]  # asked from step 75 (half of 150) on
    assert evaluate(300, (25, 50, 75, 100, 150, 175)) == [25, 50, 75, 100]  # half of its own 300 steps
    assert evaluate(100, (25, 50, 75, 100)) == [25]  # pruned at 50, half of its 100
    assert evaluate(50, (20, 50)) == [20, 50]  # 50 is past half, but it is the trial's last step: not pruned
