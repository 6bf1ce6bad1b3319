"""`dvc repro` of the whole pipeline (fetch -> prepare -> validate -> train -> evaluate) on a fixture project
with a tiny local model: first run executes every stage, second none, a train param change reruns only
train/evaluate, `dvc exp run -S` works, and two concurrent `ptune repro` calls queue instead of failing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.tiny_models import build_causal

REPO = Path(__file__).resolve().parents[2]
DVC = [sys.executable, "-m", "dvc"]
STAGES = ("fetch@toy", "prepare@toy", "validate@toy", "train@toy", "evaluate@toy")


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _ran(output: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("dvcproj")
    project, model = root / "proj", build_causal(root / "tiny-llama")
    (project / "inputs").mkdir(parents=True)
    words = ["good", "great", "bad", "awful"]
    rows = [{"text": f"the film was {words[i % 4]} number {i}", "label": int(i % 4 < 2)} for i in range(80)]
    (project / "inputs/toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {"path": "inputs/toy.jsonl", "template": "Review: {text}\nSentiment:", "target_field": "label",
            "label_words": ["negative", "positive"], "label_map": {0: "negative", 1: "positive"}}
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(model=str(model), run_tasks=["toy"], tasks={"toy": task}, task_overrides={})
    params["data"].update(max_train=40, max_validation=10, max_test=16)
    params["train"].update(n_tokens=4, max_steps=4, eval_every=2, checkpoint_every=2, batch_size=4)
    params["evaluate"].update(max_examples=16, batch_size=8, k_shot=2)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    shutil.copytree(REPO / "ptune", project / "ptune", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(root / "dvc-site"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(project),
           "OMP_NUM_THREADS": "1", "PTUNE_THREADS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("PTUNE_PROJECT_DIR", None)
    _run(["git", "init", "-q"], project, env)
    _run([*DVC, "init", "-q"], project, env)
    _run([sys.executable, "-m", "ptune.cli", "dvc-inputs"], project, env)
    _run(["git", "add", "-A"], project, env)
    _run(["git", "commit", "-qm", "fixture"], project, env)
    return project, env


def test_repro_runs_every_stage_then_nothing(project) -> None:
    proj, env = project
    assert _ran(_run([*DVC, "repro"], proj, env)) == set(STAGES)
    metrics = json.loads((proj / "metrics/toy.json").read_text())
    assert 0.0 <= metrics["test/accuracy"] <= 1.0 and "baseline/zero_shot/test/accuracy" in metrics
    assert (proj / "outputs/toy/prompt/prompt.safetensors").is_file()
    curve = (proj / "outputs/toy/train_curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,train/loss") and len(curve) == 5  # header + 4 steps
    second = _run([*DVC, "repro"], proj, env)
    assert _ran(second) == set() and "up to date" in second
    shown = _run([*DVC, "metrics", "show", "--json"], proj, env)
    assert "test/accuracy" in shown


def test_plots_show_renders_images_without_a_cdn(project) -> None:
    proj, env = project
    _run([*DVC, "plots", "show", "-o", "plots_html"], proj, env)
    html = (proj / "plots_html/index.html").read_text()
    assert html.count("<img") == 2 and "train_curve.png" in html and "tuned_vs_baseline.png" in html
    assert "<script" not in html and "cdn" not in html.lower()  # nothing to fetch: renders offline
    assert (proj / "outputs/toy/train_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_stage_logs_an_mlflow_run(project) -> None:
    from mlflow.tracking import MlflowClient

    proj, _ = project
    mlc = MlflowClient(tracking_uri=f"sqlite:///{proj / 'mlruns.db'}")
    runs = mlc.search_runs([mlc.get_experiment_by_name("ptune/toy").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one run for the one train stage so far
    last = runs[0]
    assert last.data.params["task"] == "toy" and last.data.params["lr"] == "0.3"
    assert {"train/loss", "validation/accuracy"} <= set(last.data.metrics)
    history = mlc.get_metric_history(last.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert {a.path for a in mlc.list_artifacts(last.info.run_id)} >= {"prompt", "report"}


def test_param_change_reruns_only_train_and_evaluate(project) -> None:
    proj, env = project
    _run(["git", "add", "-A"], proj, env)
    _run(["git", "commit", "-qm", "first repro"], proj, env)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["train"]["lr"] = 0.1
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _ran(_run([*DVC, "repro"], proj, env)) == {"train@toy", "evaluate@toy"}
    diff = _run([*DVC, "params", "diff"], proj, env)
    assert "train.lr" in diff


def test_exp_run_with_set_param(project) -> None:
    proj, env = project
    _run(["git", "add", "-A"], proj, env)
    _run(["git", "commit", "-qm", "lr 0.1"], proj, env)
    out = _run([*DVC, "exp", "run", "-S", "train.lr=0.2"], proj, env)
    assert _ran(out) == {"train@toy", "evaluate@toy"}
    shown = _run([*DVC, "exp", "show", "--json"], proj, env)
    assert "0.2" in shown


def test_concurrent_repro_queues_instead_of_failing(project) -> None:
    proj, env = project
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["train"]["lr"] = 0.05  # make work to do so the two calls overlap
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cmd = [sys.executable, "-m", "ptune.cli", "repro"]
    procs = [subprocess.Popen(cmd, cwd=proj, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert any("waiting" in out for out in outputs), outputs
    assert "Unable to acquire lock" not in "".join(outputs)
