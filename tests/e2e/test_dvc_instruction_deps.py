"""A one-word change to a hand-written baseline's instruction reruns evaluation (and its report) only, never
fetch, prepare, validate or train: the instruction lives in params.yaml `evaluate.instructions`, which only
the evaluate stage depends on, and not under `tasks`, which training depends on.

Nothing is trained: every stage's outputs are fabricated and recorded with `dvc commit`, so `dvc status`
compares the edited params.yaml against a consistent dvc.lock in seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ptune.config import load_params
from ptune.data.catalog import get_task
from ptune.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DVC = [sys.executable, "-m", "dvc"]
TASKS = ("toy", "rotten_tomatoes")  # a user task and a built-in
TOY = {"path": "inputs/toy.jsonl", "template": "Review: {text}\nSentiment:", "target_field": "label",
       "label_words": ["negative", "positive"], "label_map": {0: "negative", 1: "positive"}}
INSTRUCTIONS = {"toy": "Is this review positive or negative?", "rotten_tomatoes": "Is this movie review good or bad?"}


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _fabricate_outputs(project: Path) -> None:
    """Every out, metric and plot of every stage: a file where the path has a suffix, else a folder."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    for task in TASKS:
        for stage in stages.values():
            for kind in ("outs", "metrics", "plots"):
                for entry in stage["do"].get(kind, []):
                    out = next(iter(entry)) if isinstance(entry, dict) else entry
                    path = project / out.replace("${item}", task).replace("${key}", task)
                    target = path if path.suffix else path / "part"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(json.dumps({"fabricated": str(path.relative_to(project))}))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of this repository's pipeline (dvc.yaml, ptune, params.yaml) on a user task and a built-in,
    its dvc.lock committed from fabricated outputs: `dvc status` reports nothing changed."""
    root = tmp_path_factory.mktemp("dvcinstr")
    project = root / "proj"
    (project / "inputs").mkdir(parents=True)
    (project / "inputs/toy.jsonl").write_text('{"text": "good", "label": 1}\n')
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(run_tasks=list(TASKS), tasks={"toy": TOY}, task_overrides={})
    params["evaluate"]["instructions"] = dict(INSTRUCTIONS)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    shutil.copytree(REPO / "ptune", project / "ptune", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(root / "dvc-site"),
           "PYTHONPATH": str(project), "PTUNE_THREADS": "1"}
    env.pop("PTUNE_PROJECT_DIR", None)
    _run(["git", "init", "-q"], project, env)
    _run([*DVC, "init", "-q"], project, env)
    _run([sys.executable, "-m", "ptune.cli", "dvc-inputs"], project, env)
    _fabricate_outputs(project)
    _run([*DVC, "commit", "-f", "-q"], project, env)
    assert json.loads(_run([*DVC, "status", "--json"], project, env)) == {}
    return project, env


def _changed_stages(project: Path, env: dict[str, str]) -> set[str]:
    return set(json.loads(_run([*DVC, "status", "--json"], project, env)))


@pytest.mark.parametrize("task", TASKS)
def test_a_one_word_instruction_change_reruns_only_evaluate(project, task) -> None:
    proj, env = project
    params = yaml.safe_load((proj / "params.yaml").read_text())
    edited = params["evaluate"]["instructions"][task].replace("Is this", "Is the")
    params["evaluate"]["instructions"][task] = edited
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        loaded = load_params(proj / "params.yaml").for_task(task)
        assert get_task(task, loaded).instruction == edited  # the baselines read the edited instruction ...
        assert _changed_stages(proj, env) == {f"evaluate@{t}" for t in TASKS}  # ... and nothing upstream reruns
    finally:
        params["evaluate"]["instructions"][task] = INSTRUCTIONS[task]
        (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _changed_stages(proj, env) == set()


def test_a_train_input_change_still_reruns_training(project) -> None:
    """The control: the task's template is a training input, so prepare, validate, train and evaluate rerun."""
    proj, env = project
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["tasks"]["toy"]["template"] = "Text: {text}\nSentiment:"
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert {"prepare@toy", "validate@toy", "train@toy", "evaluate@toy"} <= _changed_stages(proj, env)
    finally:
        params["tasks"]["toy"]["template"] = TOY["template"]
        (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_task_entry_cannot_hold_the_instruction(tmp_path) -> None:
    """`tasks` is a training dependency: an instruction there is refused, naming where it went."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tasks": {"toy": {**TOY, "instruction": "Good?"}}}))
    with pytest.raises(ConfigError, match=r"'instruction' moved to params.yaml `evaluate: \{instructions: \{toy:"):
        get_task("toy", load_params(tmp_path / "params.yaml"))


def test_only_the_evaluate_stage_depends_on_the_evaluate_section() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    readers = {name for name, stage in stages.items()
               if any(p == "evaluate" or p.startswith("evaluate.") for p in stage["do"].get("params", []))}
    assert readers == {"evaluate"}
