"""`model_device_map`: accelerate's placement gives the numbers of the plain load; a bad mapping fails in one line;
data-parallel ranks refuse it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ptune.cli.run import train_on_ranks
from ptune.config.params import Params, params_from_dict
from ptune.errors import ConfigError, ModelError
from ptune.model.base import load_base_model

pytestmark = pytest.mark.usefixtures("keep_threads")


def _forward_backward(base) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, gradient w.r.t. a seeded 3-token soft prompt) of one fixed batch."""
    torch.manual_seed(0)
    prompt = torch.nn.Parameter(torch.randn(1, 3, base.hidden_size) * 0.1)  # (1, P, d)
    ids = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]])
    inputs = torch.cat([prompt.expand(2, -1, -1), base.embed(ids)], dim=1)  # (2, P+T, d)
    logits = base.model(inputs_embeds=inputs).logits  # (2, P+T, V)
    logits[:, -1].log_softmax(-1)[:, 9].sum().neg().backward()
    return logits.detach(), prompt.grad


@pytest.mark.parametrize("device_map", ["auto", "balanced", {"": "cpu"}, {"model": "cpu", "lm_head": "cpu"}])
def test_placement_gives_the_plain_numbers(device_map, tiny_causal_dir):
    plain = load_base_model(tiny_causal_dir, device="cpu")
    placed = load_base_model(tiny_causal_dir, device="cpu", device_map=device_map)
    assert placed.fingerprint == plain.fingerprint and placed.device == torch.device("cpu")
    (logits, grad), (ref_logits, ref_grad) = _forward_backward(placed), _forward_backward(plain)
    assert torch.equal(logits, ref_logits) and torch.equal(grad, ref_grad)


@pytest.mark.parametrize("device_map, needle", [
    ({"model.nope": "cpu", "": "cpu"}, "names modules the model does not have: model.nope"),
    ({"": "cuda:3"}, "'cuda:3' is not a visible device"),
    ({"": "tpu"}, "'tpu' is not a visible device"),
    ("fastest", "allowed values are none, auto, balanced"),
])
def test_bad_placement_fails_in_one_line(device_map, needle, tiny_causal_dir):
    with pytest.raises(ModelError, match=needle) as err:
        load_base_model(tiny_causal_dir, device="cpu", device_map=device_map)
    assert "\n" not in str(err.value)


def test_params_key_validated():
    assert Params().model_device_map == "none"
    assert params_from_dict({"model_device_map": {"": "cpu"}}).model_device_map == {"": "cpu"}
    with pytest.raises(ConfigError) as err:
        params_from_dict({"model_device_map": "fastest", "model_quantize": "int2"})
    assert "model_device_map = 'fastest'" in str(err.value) and "model_quantize = 'int2'" in str(err.value)


def test_data_parallel_ranks_refuse_a_device_map():
    run = SimpleNamespace(params=Params(model_device_map="auto"))
    with pytest.raises(ConfigError, match="--nproc 2 with model_device_map = 'auto'.*model_device_map: none"):
        train_on_ranks(run, 2, False, None, 0)
