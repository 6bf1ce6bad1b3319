"""`ptune train --nproc 2` (2 gloo ranks on CPU): a rank killed with SIGKILL mid-training (rank 1, or rank 0,
the one that writes) fails the whole job promptly with one error line, leaves no rank behind and no MLflow run
open; the same command run again resumes from the last checkpoint rank 0 wrote and finishes, with the prompt
one process trains uninterrupted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from ptune.registry import run_status, tracking
from ptune.training.checkpoint import read_checkpoint
from tests.support import build_project, project_env, project_env_vars, run_cli

REPO = Path(__file__).resolve().parents[2]
STEPS, EVERY, KILL_FROM = 120, 2, 16
DEADLINE = 300.0  # seconds for the ranks to start and reach KILL_FROM (imports, model loads) under load
STOP_WITHIN = 60.0  # seconds from the kill to the job's exit (the agent sends SIGTERM, then SIGKILL at 30 s)


@pytest.fixture
def project(tmp_path: Path, tiny_causal_dir: Path) -> Path:
    root = build_project(tmp_path / "project", tiny_causal_dir, n_rows=40)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(max_steps=STEPS, checkpoint_every=EVERY, eval_every=40)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with project_env(root):
        for step in ("fetch", "prepare"):
            run_cli(root, step, "toy")
    return root


class Train:
    """`ptune train toy [ARGS]` as its own process; stderr read as it comes, by a thread."""

    def __init__(self, root: Path, *args: str) -> None:
        env = {**os.environ, **project_env_vars(root), "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-m", "ptune.cli", "train", "toy", *args], cwd=root,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self.reader = threading.Thread(target=lambda: self.err.extend(iter(self.proc.stderr.readline, "")))
        self.reader.start()

    def rank_pids(self) -> dict[int, int]:
        """{rank: pid} from the lines each rank logs when it joins."""
        found = (re.search(r"rank (\d+) of \d+: pid (\d+)", line) for line in list(self.err))
        return {int(m[1]): int(m[2]) for m in found if m}

    def finish(self, timeout: float = 600) -> tuple[int, str, str]:
        self.proc.wait(timeout=timeout)  # stdout is one JSON object at most: it fits the pipe
        out = self.proc.stdout.read() if self.proc.stdout else ""
        self.reader.join(timeout=10)
        return self.proc.returncode, out, "".join(self.err)


def committed_step(root: Path) -> int:
    loaded = read_checkpoint(root / "outputs" / "toy" / "checkpoint")  # replaced by rename: always whole
    return loaded[1]["step"] if loaded else 0


def alive(pid: int) -> bool:
    """A process that runs (a zombie does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_for(condition, deadline: float, what: str, proc: subprocess.Popen | None = None) -> None:
    while not condition():  # poll a condition, never sleep a fixed time
        assert proc is None or proc.poll() is None, f"the job ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.01)


def mlflow_runs(root: Path) -> list:
    with project_env(root):
        return tracking.client().search_runs([tracking.ensure_experiment("toy")])


@pytest.mark.timeout(900)
@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_rank_fails_the_job_in_one_line_and_a_rerun_resumes(project, tmp_path, tiny_causal_dir,
                                                                       victim):
    job = Train(project, "--nproc", "2")
    try:
        wait_for(lambda: len(job.rank_pids()) == 2 and committed_step(project) >= KILL_FROM,
                 time.monotonic() + DEADLINE, f"checkpoint of step {KILL_FROM}", job.proc)
    except BaseException:
        job.proc.kill()
        raise
    pids = job.rank_pids()
    os.kill(pids[victim], signal.SIGKILL)  # a rank the job started, not the launcher
    killed_at = time.monotonic()
    code, out, err = job.finish(timeout=STOP_WITHIN + 60)
    assert time.monotonic() - killed_at < STOP_WITHIN
    lines = err.strip().splitlines()
    assert code == 1 and out == "", err[-3000:]
    cause = f"rank {victim} (pid {pids[victim]}) was killed by SIGKILL"
    assert lines[-1] == (f"error: data-parallel training on 2 processes stopped: {cause}; every other rank "
                         "was stopped; run it again to resume from the last checkpoint"), err[-3000:]
    assert "Traceback" not in err and sum(line.startswith("error:") for line in lines) == 1, err[-3000:]
    wait_for(lambda: not any(alive(pid) for pid in pids.values()), time.monotonic() + 30, "end of every rank")
    at_kill = committed_step(project)
    assert KILL_FROM <= at_kill < STEPS and not (project / "outputs" / "toy" / "prompt").exists()
    (failed,) = mlflow_runs(project)  # ended by rank 0 (SIGTERM from the agent), or by the launcher
    assert failed.info.status in ("FAILED", "KILLED"), failed.data.tags
    assert victim != 0 or cause in failed.data.tags[run_status.END_REASON_TAG]

    code, out, err = Train(project, "--nproc", "2", "--no-track").finish()
    assert code == 0, err[-3000:]
    resumed = json.loads(out[out.index("{"):])
    assert resumed["resumed_from"] == at_kill > 0 and resumed["steps_run"] == STEPS
    if victim == 0:
        return  # the prompt: compared once, below
    single = build_project(tmp_path / "single", tiny_causal_dir, n_rows=40)  # the same task, one process
    (single / "params.yaml").write_text((project / "params.yaml").read_text())
    with project_env(single):
        for step in ("fetch", "prepare", "train"):
            run_cli(single, step, "toy", *(["--no-track"] if step == "train" else []))
    tuned, expected = (load_file(str(root / "outputs" / "toy" / "prompt" / "prompt.safetensors"))
                       ["prompt_embeddings"] for root in (project, single))
    assert float((tuned - expected).abs().max()) < 1e-5
