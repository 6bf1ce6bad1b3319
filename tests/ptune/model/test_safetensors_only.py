"""Local model directories are read from safetensors only: a pickled `pytorch_model.bin` is never unpickled
(loading one runs whatever code the pickle names), and a directory that has nothing else is refused clearly."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from ptune.errors import ModelError
from ptune.model.base import load_base_model


def test_a_local_directory_with_only_pytorch_model_bin_is_refused_without_unpickling(tiny_causal_dir, tmp_path,
                                                                                     monkeypatch, keep_threads):
    pickled = tmp_path / "pickled-model"
    shutil.copytree(tiny_causal_dir, pickled)
    state = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).state_dict()
    torch.save(state, pickled / "pytorch_model.bin")  # what transformers would read without safetensors
    for weights in pickled.glob("*.safetensors*"):
        weights.unlink()
    monkeypatch.setattr(torch, "load", lambda *a, **kw: pytest.fail("a pickled checkpoint was unpickled"))
    with pytest.raises(ModelError, match=rf"refusing to load model '{pickled}' from {pickled}: it has no \*\.safetensors "
                                         r"weights, and ptune never unpickles pytorch_model.bin"):
        load_base_model(str(pickled))
    assert load_base_model(str(tiny_causal_dir)).path == str(tiny_causal_dir.resolve())  # safetensors: loads
