"""Training on CUDA with no flags: the base model's device is used, bf16 autocast where supported, fp32 prompt."""

from __future__ import annotations

import math

import pytest
import torch

from ptune.config import TrainConfig
from ptune.training import checkpoint as ckpt
from ptune.training.train import train_prompt
from tests.ptune.training.test_train import SPEC, TRAIN, VALID

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")]


def test_trains_on_cuda_with_bf16_autocast(tiny_base, tmp_path):
    tiny_base.model.to("cuda")  # what load_base_model does when a GPU is present
    before = {k: v.clone() for k, v in tiny_base.model.state_dict().items()}
    autocast_seen: list[torch.dtype | None] = []
    hook = tiny_base.model.register_forward_pre_hook(lambda module, args: autocast_seen.append(
        torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None))
    cfg = TrainConfig(n_tokens=4, init="random", batch_size=4, max_steps=4, eval_every=2, checkpoint_every=2)
    result = train_prompt(tiny_base, SPEC, TRAIN, VALID, cfg, tmp_path)
    hook.remove()

    bf16 = torch.cuda.is_bf16_supported()
    assert result.device.startswith("cuda") and tiny_base.device.type == "cuda"
    assert result.prompt.weight.device.type == "cuda" and result.prompt.weight.dtype == torch.float32
    assert result.autocast == ("bfloat16" if bf16 else None)
    assert (torch.bfloat16 in autocast_seen) == bf16
    assert all(math.isfinite(h.loss) for h in result.history) and len(result.history) == 4
    assert all(math.isfinite(v) for h in result.history if h.metrics for v in h.metrics.values())
    after = tiny_base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    tensors, doc = ckpt.read_checkpoint(tmp_path / "checkpoint")
    assert doc["step"] == 4 and tensors["prompt"].dtype == torch.float32

    longer = train_prompt(tiny_base, SPEC, TRAIN, VALID, TrainConfig(**{**cfg.to_dict(), "max_steps": 6}), tmp_path)
    assert longer.resumed_from == 4 and longer.steps_run == 6  # optimizer state reloaded onto the GPU
    assert longer.prompt.weight.device.type == "cuda"
