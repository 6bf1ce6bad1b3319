"""dvc.yaml as DVC users expect: every stage depends on the code its command imports (a test, so a new module
cannot slip past), on params that exist; its fetch stage on the files a task reads (task_inputs.yaml, current);
plots are images (offline); the default remote lives outside the workspace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from ptune.config import load_params
from ptune.pipeline import dvc_inputs
from tests.test_architecture import graph

REPO = Path(__file__).resolve().parents[2]


def imported_modules(start: str, root: Path = REPO) -> set[str]:
    """Every ptune module `start` imports, transitively (ast-based: lazy imports count, as in test_architecture)."""
    edges, seen, todo = graph(root), {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def module_file(module: str, root: Path = REPO) -> Path:
    path = root / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def uncovered(stages: dict, root: Path = REPO) -> list[str]:
    """'<stage>: <module file>' for each ptune module a stage's `python -m <module>` command imports but no
    dep (a file or a folder above it) covers."""
    problems = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        words = body["cmd"].split()
        start = words[words.index("-m") + 1]
        deps = [Path(d) for d in body.get("deps", []) if "${" not in d]
        for module in sorted(imported_modules(start, root)):
            rel = module_file(module, root).relative_to(root)
            if not any(rel == d or d in rel.parents for d in deps):
                problems.append(f"{name}: {rel}")
    return problems


def _dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def test_every_stage_depends_on_the_code_its_command_imports():
    stages = _dvc_yaml()["stages"]
    assert set(stages) == {"fetch", "prepare", "validate", "train", "evaluate"}
    assert uncovered(stages) == []
    assert {"ptune.pipeline.stages", "ptune.model.soft_prompt", "ptune.evaluation.baseline"} <= imported_modules("ptune.cli")


def test_the_checker_sees_a_missing_dep(tmp_path):
    """A stage that lists only ptune/data while its command reaches ptune.model is reported."""
    for name, text in {"ptune/__init__.py": "", "ptune/cli/__init__.py": "def f():\n    from ptune.model import m\n",
                       "ptune/data/__init__.py": "", "ptune/model/__init__.py": "", "ptune/model/m.py": ""}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    stage = {"cmd": "python -m ptune.cli x", "deps": ["ptune/data", "ptune/cli/__init__.py", "ptune/__init__.py"]}
    assert uncovered({"s": stage}, tmp_path) == ["s: ptune/model/__init__.py", "s: ptune/model/m.py"]


def test_stage_params_exist_in_params_yaml():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in _dvc_yaml()["stages"].items():
        for key in stage["do"]["params"]:
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{name}: params.yaml has no {key}"
                node = node[part]


def test_fetch_depends_on_the_files_in_task_inputs_and_they_are_current():
    fetch = _dvc_yaml()["stages"]["fetch"]
    assert fetch["foreach"] == "${fetch_inputs}" and {"${item.data}", "${item.spec}"} <= set(fetch["do"]["deps"])
    assert "task_inputs.yaml" in _dvc_yaml()["vars"]
    committed = (REPO / dvc_inputs.FILE).read_text()
    assert committed == dvc_inputs.render(load_params(REPO / "params.yaml"), REPO), "run `ptune dvc-inputs`"


def test_task_inputs_name_a_user_tasks_data_and_tasks_file(tmp_path):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs/mine.csv").write_text("text,label\na,b\n")
    (tmp_path / "my_tasks.yaml").write_text(yaml.safe_dump({"mine": {
        "path": "inputs/mine.csv", "template": "T: {text}\nL:", "target_field": "label"}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"run_tasks": ["mine", "intent"],
                                                          "tasks": {"file": "my_tasks.yaml"}}))
    found = dvc_inputs.task_inputs(load_params(tmp_path / "params.yaml"), tmp_path)
    assert found == {"mine": {"data": "inputs/mine.csv", "spec": "my_tasks.yaml"},
                     "intent": {"data": "ptune/data", "spec": "ptune/data"}}


def test_plots_are_images_so_dvc_plots_show_renders_offline():
    plots = [p for stage in _dvc_yaml()["stages"].values() for entry in stage["do"].get("plots", [])
             for p in (entry if isinstance(entry, dict) else {entry: {}})]
    assert plots == ["outputs/${item}/train_curve.png", "outputs/${item}/report/tuned_vs_baseline.png"]


def test_default_remote_lives_outside_the_workspace():
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run([sys.executable, "-m", "dvc", "remote", "list"], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    name, url = out[0], Path(out[1])
    assert url.is_absolute() and REPO not in url.parents and url != REPO, url
    assert "(default)" in out and name == "local"
