"""What the tests share: a throwaway ptune project (params.yaml with two user tasks on local JSONL, tens of
rows), the environment that points ptune and MLflow at it, and a free loopback port.

`toy` is clean; `toy_bad` has rows labelled "meh", outside its label words, so validation must fail.
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.tiny_models import WORDS

TRAIN = {"n_tokens": 4, "init": "labels", "lr": 0.3, "batch_size": 4, "max_steps": 6, "eval_every": 3,
         "checkpoint_every": 2, "patience": 0, "seed": 0}


def toy_rows(n: int, seed: int, bad_every: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "good" if i % 2 == 0 else "bad"
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + f" {label} {i}"
        rows.append({"text": text, "label": "meh" if bad_every and i % bad_every == 0 else label})
    return rows


def build_project(root: Path, model_dir: Path, n_rows: int = 60) -> Path:
    """Write data/toy*.jsonl and params.yaml under `root`; returns root."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name, bad_every in (("toy", 0), ("toy_bad", 4)):
        rows = toy_rows(n_rows, seed=1, bad_every=bad_every)
        (root / "data" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    entry = {"template": "Review: {text}\nSentiment:", "target_field": "label", "label_words": ["good", "bad"],
             "k_shot": 2, "max_source_tokens": 64}
    params = {
        "model": str(model_dir), "run_tasks": ["toy"],
        "data": {"seed": 0, "max_train": 0, "max_validation": 0, "max_test": 0, "min_class_share": 0.05},
        "train": TRAIN, "evaluate": {"batch_size": 16, "max_examples": 0, "k_shot": 2, "degenerate_share": None,
                                     "instructions": {"toy": "Is the review good or bad?"}},
        # any candidate passes (a tiny random model answers one class; 6 test rows): the first version becomes champion
        "promote": {"min_gain": -1.0, "require_significant": False, "min_examples": 0},
        "tasks": {"toy": {**entry, "path": "data/toy.jsonl"}, "toy_bad": {**entry, "path": "data/toy_bad.jsonl"}},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def project_env_vars(root: Path) -> dict[str, str]:
    return {"PTUNE_PROJECT_DIR": str(root), "PTUNE_HOME": str(root / ".ptune-home"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns.db'}", "PTUNE_THREADS": "1"}


@contextmanager
def project_env(root: Path) -> Iterator[Path]:
    """Point ptune (paths, MLflow store, locks) at the project for the duration of the block."""
    saved = {k: os.environ.get(k) for k in project_env_vars(root)}
    os.environ.update(project_env_vars(root))
    try:
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def use_project(root: Path, monkeypatch) -> Path:
    """Point ptune (project dir, MLflow store, caches) at `root` for one test; artifacts next to the store."""
    for key, value in project_env_vars(root).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PTUNE_MLFLOW_ARTIFACTS", raising=False)
    return root


def run_cli(root: Path, *args: str) -> str:
    """`ptune ARGS --params ROOT/params.yaml` in-process; its stdout, asserting exit code 0."""
    from typer.testing import CliRunner

    from ptune.cli import app

    result = CliRunner().invoke(app, [*args, "--params", str(root / "params.yaml")])
    assert result.exit_code == 0, f"ptune {' '.join(args)}: {result.output}\n{result.exception!r}"
    return result.stdout


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
