"""The failure report names the run's last checkpoint: the local file, or the manifest at train.checkpoint_uri
(the step it committed), with any password in the URL hidden."""

from __future__ import annotations

import json

import torch

from flows.failure import last_checkpoint
from ptune.training.store import location, open_store
from tests.support import use_project

RUN = "0123456789abcdef"


def commit(where: str, step: int) -> None:
    open_store(where).write({"prompt": torch.zeros(2, 3)}, {"step": step, "meta": {"task": "toy"}})


def test_no_checkpoint_local_checkpoint_and_one_at_a_url(tmp_path, monkeypatch):
    project = use_project(tmp_path / "project", monkeypatch)
    project.mkdir()
    root = project / "outputs" / "toy" / "prefect" / RUN[:8]
    assert last_checkpoint("toy", RUN).startswith("none (no ")
    commit(str(root / "checkpoint"), 7)
    assert "(step 7)" in last_checkpoint("toy", RUN)
    shared = (tmp_path / "shared").as_uri()
    (project / "params.yaml").write_text(f"train:\n  checkpoint_uri: {json.dumps(shared)}\n")
    assert last_checkpoint("toy", RUN).startswith("none at ")
    commit(location(shared, "toy", root), 12)
    found = last_checkpoint("toy", RUN)
    assert "(step 12)" in found and f"{shared}/toy/prefect/{RUN[:8]}/manifest.json" in found
