"""Checkpoints at a URL (train.checkpoint_uri, ptune.training.store): where they live, the manifest that
commits them, a writer killed before its commit, a corrupt manifest set aside, resume through memory://,
and the ConfigError for a URL no fsspec file system can write."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import fsspec
import pytest
import torch

from ptune.config import TrainConfig, params_from_dict
from ptune.errors import ConfigError
from ptune.training import checkpoint as ckpt
from ptune.training import store as store_mod
from ptune.training.store import MANIFEST, UrlStore, location, open_store
from ptune.training.train import train_prompt
from tests.ptune.training.test_train import BASE_CFG, SPEC, TRAIN, VALID, Kill, _kill_at


@pytest.fixture
def url(tmp_path):
    """A fresh memory:// location (the in-memory file system is process-wide: one prefix per test)."""
    where = f"memory://ckpt-{tmp_path.name}"
    yield where
    fs = fsspec.filesystem("memory")
    if fs.exists(where):
        fs.rm(where, recursive=True)


def _names(url: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(url)
    return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))


def test_location_mirrors_the_run_root_under_the_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("PTUNE_PROJECT_DIR", str(tmp_path))
    outputs = tmp_path / "outputs" / "toy"
    assert location(None, "toy", outputs) == str(outputs / "checkpoint")  # the default, as before
    assert location("s3://bucket/ckpt/", "toy", outputs) == "s3://bucket/ckpt/toy"
    prefect_run = outputs / "prefect" / "ab12cd34"
    assert location("s3://bucket/ckpt", "toy", prefect_run) == "s3://bucket/ckpt/toy/prefect/ab12cd34"
    assert location("shared/ckpt", "toy", outputs) == (tmp_path / "shared" / "ckpt").as_uri() + "/toy"
    elsewhere = location("memory://c", "toy", tmp_path / "somewhere")
    assert elsewhere.startswith("memory://c/toy/elsewhere/")
    assert elsewhere != location("memory://c", "toy", tmp_path)
    assert isinstance(open_store("memory://c/toy"), UrlStore)
    assert not isinstance(open_store(outputs), UrlStore)


def test_manifest_commits_the_state_file_and_old_files_are_removed(url):
    store = open_store(url)
    assert store.read() is None
    store.write({"prompt": torch.ones(2, 3)}, {"step": 1, "meta": {"task": "toy"}})
    fsspec.filesystem("memory").pipe_file(f"{url}/.{MANIFEST}.0badf00d", b'{"format"')  # a killed write's temp
    store.write({"prompt": torch.full((2, 3), 2.0)}, {"step": 2, "meta": {"task": "toy"}})
    tensors, state = store.read()
    assert state["step"] == 2 and torch.equal(tensors["prompt"], torch.full((2, 3), 2.0))
    manifest = json.loads(fsspec.open(f"{url}/{MANIFEST}").open().read())
    assert manifest["format"] == store_mod.FORMAT and manifest["step"] == 2 and manifest["task"] == "toy"
    assert _names(url) == sorted([MANIFEST, manifest["file"]])  # step 1's state file and the temp are gone


def test_a_writer_killed_before_its_manifest_leaves_the_previous_checkpoint(url, monkeypatch):
    store = open_store(url)
    store.write({"prompt": torch.ones(2, 3)}, {"step": 1})
    real_put = UrlStore._put

    def dies_at_commit(self, name, data, *, atomic):
        if name == MANIFEST:
            raise OSError("connection reset")  # the state file is written, the manifest never is
        real_put(self, name, data, atomic=atomic)

    monkeypatch.setattr(UrlStore, "_put", dies_at_commit)
    with pytest.raises(OSError):
        store.write({"prompt": torch.zeros(2, 3)}, {"step": 2})
    assert len([n for n in _names(url) if n.startswith("state-")]) == 2  # an orphan, named by no manifest
    tensors, state = store.read()
    assert state == {"step": 1} and torch.equal(tensors["prompt"], torch.ones(2, 3))
    monkeypatch.setattr(UrlStore, "_put", real_put)
    store.write({"prompt": torch.zeros(2, 3)}, {"step": 3})
    assert len([n for n in _names(url) if n.startswith("state-")]) == 1  # the orphan went with the next write


def _truncate_manifest(url: str) -> None:
    with fsspec.open(f"{url}/{MANIFEST}", "rb") as fh:
        raw = fh.read()
    with fsspec.open(f"{url}/{MANIFEST}", "wb") as fh:
        fh.write(raw[: len(raw) // 2])


def _flip_state(url: str) -> None:
    with fsspec.open(f"{url}/{MANIFEST}", "rb") as fh:
        name = json.loads(fh.read())["file"]
    with fsspec.open(f"{url}/{name}", "rb") as fh:
        data = bytearray(fh.read())
    data[-5] ^= 0x01
    with fsspec.open(f"{url}/{name}", "wb") as fh:
        fh.write(bytes(data))


@pytest.mark.parametrize("damage,reason", [(_truncate_manifest, "incomplete manifest"),
                                           (_flip_state, "the state file differs from its size and sha256")])
def test_a_corrupt_checkpoint_at_a_url_is_set_aside(tiny_causal, tmp_path, url, caplog, damage, reason):
    cfg = replace(BASE_CFG, max_steps=3, eval_every=0, checkpoint_every=3)
    clean = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path / "clean")
    train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path / "run", checkpoint=url)
    damage(url)
    with caplog.at_level(logging.WARNING):
        again = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path / "run", checkpoint=url)
    message = next(r.getMessage() for r in caplog.records if "is corrupt" in r.getMessage())
    assert message.startswith(f"checkpoint {url}/{MANIFEST} is corrupt ({reason}")
    assert message.endswith(f"moved it to {url}/corrupt-1 and starting fresh")
    assert MANIFEST in _names(f"{url}/corrupt-1")  # kept for inspection, not deleted
    assert again.resumed_from is None and torch.equal(again.prompt.weight, clean.prompt.weight)
    assert open_store(url).read()[1]["step"] == 3  # a fresh, valid checkpoint replaced it


def test_resume_through_a_url_equals_an_uninterrupted_run(tiny_causal, tmp_path, url):
    cfg = replace(BASE_CFG, warmup_steps=3)
    a = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path / "a")
    with pytest.raises(Kill):
        train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path / "b", callback=_kill_at(8),
                     checkpoint=url)
    assert not (tmp_path / "b" / "checkpoint").exists()  # nothing local: it all went to the URL
    b = train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path / "elsewhere", checkpoint=url)
    assert b.resumed_from == 6 and b.steps_run == a.steps_run == 12
    assert torch.equal(a.prompt.weight, b.prompt.weight)
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    local = ckpt.read_checkpoint(tmp_path / "a" / "checkpoint")[0]["prompt"]
    assert torch.equal(open_store(url).read()[0]["prompt"], local)


def test_another_recipe_or_task_never_resumes_a_checkpoint_at_the_same_url(tiny_causal, tmp_path, url,
                                                                           caplog):
    cfg, toy2 = replace(BASE_CFG, max_steps=3, eval_every=0), replace(SPEC, name="toy2")
    train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path, checkpoint=url)
    with caplog.at_level(logging.WARNING):
        other_recipe = train_prompt(tiny_causal, SPEC, TRAIN, VALID, replace(cfg, lr=0.1), tmp_path,
                                    checkpoint=url)
        other_task = train_prompt(tiny_causal, toy2, TRAIN, VALID, cfg, tmp_path, checkpoint=url)
    assert other_recipe.resumed_from is None and other_task.resumed_from is None
    assert sum("was made with other settings" in r.getMessage() for r in caplog.records) == 2
    moved = replace(cfg, checkpoint_uri="memory://x", threads=1)  # where it lives, threads: not the recipe
    assert train_prompt(tiny_causal, toy2, TRAIN, VALID, moved, tmp_path, checkpoint=url).resumed_from == 3


@pytest.mark.parametrize("uri,expected", [
    ("nosuch://bucket/ckpt", "unknown storage scheme nosuch://"),
    ("https://example.com/ckpt", "https:// is read-only"),
    ("", "expected a local directory or a writable fsspec URL"),
])
def test_a_url_no_file_system_can_write_is_one_config_error(uri, expected):
    with pytest.raises(ConfigError) as info:
        params_from_dict({"train": {"checkpoint_uri": uri}})
    (problem,) = info.value.problems  # one line, naming the setting, its value and what it expects
    assert problem.startswith(f"train.checkpoint_uri = {uri!r}: ") and expected in problem
    assert "expected a local directory or a writable fsspec URL" in problem


def test_a_scheme_whose_package_is_missing_names_it(monkeypatch):
    def missing(scheme):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    with pytest.raises(ConfigError, match=r"train.checkpoint_uri = 's3://b/ckpt': s3:// needs a missing "
                                          r"package \(Install s3fs to access S3\)"):
        TrainConfig(checkpoint_uri="s3://b/ckpt")
    monkeypatch.undo()
    for fine in (None, "memory://ckpt", "file:///shared/ckpt", "/shared/ckpt", "ckpt"):
        assert TrainConfig(checkpoint_uri=fine).checkpoint_uri == fine


def test_the_local_default_is_unchanged(tiny_causal, tmp_path):
    cfg = replace(BASE_CFG, max_steps=2, eval_every=0, checkpoint_every=2)
    train_prompt(tiny_causal, SPEC, TRAIN, VALID, cfg, tmp_path)
    assert [p.name for p in (tmp_path / "checkpoint").iterdir()] == [ckpt.FILE]
    assert ckpt.read_checkpoint(Path(tmp_path / "checkpoint"))[1]["step"] == 2
