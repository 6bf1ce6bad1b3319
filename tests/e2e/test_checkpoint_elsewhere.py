"""A checkpoint survives a move: `ptune train` killed with SIGKILL mid-training on one "worker" (a project
directory and HOME of its own) is retried on another with the same `train.checkpoint_uri` (a file:// URL of a
shared folder); the retry resumes from the last committed step and ends with the uninterrupted run's prompt,
bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ptune.training.store import MANIFEST, open_store
from tests.support import build_project, project_env, project_env_vars, run_cli

REPO = Path(__file__).resolve().parents[2]
STEPS, EVERY, KILL_FROM = 200, 2, 20  # ~25 ms a step: the kill lands well inside training, even under load
DEADLINE = 300.0  # seconds for that checkpoint to appear (interpreter start, imports, model load, 20 steps)


def _worker(root: Path, model_dir: Path, checkpoint_uri: str | None) -> Path:
    """A project of its own (data, params, HOME), prepared; training settings shared by every worker."""
    build_project(root, model_dir, n_rows=40)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(max_steps=STEPS, checkpoint_every=EVERY, eval_every=50,
                           checkpoint_uri=checkpoint_uri)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with project_env(root):
        for step in ("fetch", "prepare"):
            run_cli(root, step, "toy")
    return root


def _train(root: Path, **popen: object) -> subprocess.Popen:
    """`ptune train toy --no-track` as its own process, in `root`, with a HOME of its own."""
    env = {**os.environ, **project_env_vars(root), "HOME": str(root / "home"), "PYTHONPATH": str(REPO)}
    (root / "home").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "ptune.cli", "train", "toy", "--no-track"], cwd=root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _committed_step(url: str) -> int:
    """The step of the checkpoint the manifest commits at `url` (0 while there is none)."""
    path = Path(url.removeprefix("file://")) / MANIFEST
    return json.loads(path.read_text())["step"] if path.is_file() else 0  # renamed into place: always whole


def _finished(proc: subprocess.Popen) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out[out.index("{"):]), err


@pytest.mark.timeout(900)
def test_a_run_killed_on_one_worker_resumes_on_another_and_ends_bit_identical(tmp_path, tiny_causal_dir):
    shared = (tmp_path / "shared" / "ckpt").as_uri()
    url = f"{shared}/toy"  # where both workers find the task's checkpoint
    first = _worker(tmp_path / "worker-1", tiny_causal_dir, shared)
    second = _worker(tmp_path / "worker-2", tiny_causal_dir, shared)
    reference = _worker(tmp_path / "uninterrupted", tiny_causal_dir, None)  # outputs/<task>/checkpoint

    killed = _train(first, start_new_session=True)
    deadline = time.monotonic() + DEADLINE
    try:
        while _committed_step(url) < KILL_FROM:  # synchronise on a committed checkpoint, never on a sleep
            assert killed.poll() is None, f"ended before step {KILL_FROM}: {killed.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, f"no checkpoint of step {KILL_FROM} appeared in time"
            time.sleep(0.01)
    finally:
        killed.send_signal(signal.SIGKILL)  # our own child (a no-op once it is reaped): no cleanup runs there
        killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    at_kill = _committed_step(url)
    assert KILL_FROM <= at_kill < STEPS, f"the kill did not land mid-training (step {at_kill})"
    assert not (first / "outputs" / "toy" / "prompt").exists()

    retry, log = _finished(_train(second))
    ref, _ = _finished(_train(reference))
    assert retry["resumed_from"] == at_kill  # the last step committed before the kill, not a fresh start
    assert f"resumed from {url}/{MANIFEST} at step {at_kill}" in log
    assert ref["resumed_from"] is None and retry["steps_run"] == ref["steps_run"] == STEPS

    tuned, expected = (load_file(str(root / "outputs" / "toy" / "prompt" / "prompt.safetensors"))
                       for root in (second, reference))
    assert tuned.keys() == expected.keys() and all(torch.equal(tuned[k], expected[k]) for k in tuned)
    last, _ = open_store(url).read()
    last_ref, _ = open_store(reference / "outputs" / "toy" / "checkpoint").read()
    assert torch.equal(last["prompt"], last_ref["prompt"])  # the final raw prompt too, not only the best one
    assert not (second / "outputs" / "toy" / "checkpoint").exists()  # every checkpoint went to the shared URL
