"""A corrupt checkpoint (truncated, one flipped byte, a prompt of the wrong shape, no checksum) is moved aside with
a warning and training starts fresh, reaching the same prompt as a run that never had a checkpoint."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from ptune.training import checkpoint as ckpt
from ptune.training.train import train_prompt
from tests.ptune.training.test_train import BASE_CFG, SPEC, TRAIN, VALID

CFG = replace(BASE_CFG, max_steps=3, eval_every=0, checkpoint_every=3)


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # one bit of the last tensor's values
    path.write_bytes(bytes(data))


def _wrong_shape(path):
    tensors, state = ckpt.read_checkpoint(path.parent)
    tensors["prompt"] = torch.zeros(tensors["prompt"].shape[0] + 1, tensors["prompt"].shape[1])
    ckpt.write_checkpoint(path.parent, tensors, state)  # a valid checksum over the wrong shape


def _no_checksum(path):
    tensors, state = ckpt.read_checkpoint(path.parent)
    save_file(tensors, str(path), metadata={"state": json.dumps(state)})


@pytest.mark.parametrize("damage,reason", [
    (_truncate, "unreadable: "),
    (_flip, "checksum mismatch"),
    (_wrong_shape, "prompt shape (5, 32), expected (4, 32)"),
    (_no_checksum, "no checksum (written by an older ptune)"),
])
def test_corrupt_checkpoint_is_set_aside_and_training_starts_fresh(tiny_causal, tmp_path, caplog, damage, reason):
    assert tiny_causal.hidden_size == 32  # the shape in the expected message
    clean = train_prompt(tiny_causal, SPEC, TRAIN, VALID, CFG, tmp_path / "clean")
    out = tmp_path / "run"
    train_prompt(tiny_causal, SPEC, TRAIN, VALID, CFG, out)
    state = out / "checkpoint" / ckpt.FILE
    damage(state)
    damaged = state.read_bytes()
    with caplog.at_level(logging.WARNING):
        again = train_prompt(tiny_causal, SPEC, TRAIN, VALID, CFG, out)
    aside = out / "checkpoint" / f"{ckpt.FILE}.corrupt-1"
    message = next(r.getMessage() for r in caplog.records if "is corrupt" in r.getMessage())
    assert message.startswith(f"checkpoint {state} is corrupt ({reason}")
    assert message.endswith(f"); moved it to {aside} and starting fresh")
    assert aside.read_bytes() == damaged  # kept for inspection, not deleted
    assert again.resumed_from is None and again.steps_run == 3
    assert torch.equal(again.prompt.weight, clean.prompt.weight)
    assert ckpt.read_checkpoint(out / "checkpoint") is not None  # a fresh, valid checkpoint replaced it


def test_checkpoint_carries_a_checksum_of_its_content(tmp_path):
    ckpt.write_checkpoint(tmp_path, {"prompt": torch.ones(2, 3)}, {"step": 1})
    from safetensors import safe_open

    with safe_open(str(tmp_path / ckpt.FILE), framework="pt") as fh:
        assert len(fh.metadata()["sha256"]) == 64
    assert ckpt.read_checkpoint(tmp_path)[1] == {"step": 1}
