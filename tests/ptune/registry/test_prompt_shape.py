"""A prompt of 0 tokens, or whose hidden size is not the base model's, is refused at save and at load with a
clear error (not a raw torch RuntimeError deep in the forward pass)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from ptune.cli import app
from ptune.errors import ArtifactError
from ptune.fileio import sha256_of
from ptune.model.artifacts import META_FILE, TENSOR_FILE, PromptMeta, load_prompt, save_prompt
from ptune.registry.loading import load_prompt_with_base


def _meta(base) -> PromptMeta:
    return PromptMeta(task="rotten_tomatoes", base_spec=base.spec, base_fingerprint=base.fingerprint)


def test_zero_tokens_refused_at_save(tiny_causal, tmp_path):
    with pytest.raises(ArtifactError) as err:
        save_prompt(tmp_path / "p", torch.zeros(0, tiny_causal.hidden_size), _meta(tiny_causal))
    assert str(err.value) == (f"cannot save prompt to {tmp_path / 'p'}:\n"
                              "  - the prompt has 0 tokens (expected n_tokens >= 1)")
    assert not (tmp_path / "p").exists()


def test_zero_tokens_refused_at_load(tiny_causal, tmp_path):
    path = save_prompt(tmp_path / "p", torch.zeros(2, tiny_causal.hidden_size), _meta(tiny_causal))
    save_file({"prompt_embeddings": torch.zeros(0, tiny_causal.hidden_size)}, str(path / TENSOR_FILE))
    data = json.loads((path / META_FILE).read_text()) | {"n_tokens": 0, "sha256": sha256_of(path / TENSOR_FILE)}
    (path / META_FILE).write_text(json.dumps(data))  # consistent with the tensor: only the shape is wrong
    with pytest.raises(ArtifactError) as err:
        load_prompt(path)
    assert f"tensor shape (0, {tiny_causal.hidden_size}): expected (n_tokens >= 1, hidden)" in str(err.value)


def test_hidden_size_other_than_the_base_refused_at_save(tiny_causal, tmp_path):
    wide = tiny_causal.hidden_size + 8
    with pytest.raises(ArtifactError) as err:
        save_prompt(tmp_path / "p", torch.zeros(3, wide), _meta(tiny_causal), base_hidden=tiny_causal.hidden_size)
    assert str(err.value) == (f"cannot save prompt to {tmp_path / 'p'}:\n  - hidden size {wide} but the base model "
                              f"{tiny_causal.spec!r} has hidden size {tiny_causal.hidden_size}")


def test_hidden_size_other_than_the_base_refused_at_load(tiny_causal, tmp_path):
    """A consistent (20, d+8) artifact naming the right base (fingerprint and all): refused before any forward."""
    wide = tiny_causal.hidden_size + 8
    path = save_prompt(tmp_path / "p", torch.randn(20, wide), _meta(tiny_causal))
    expected = (f"refusing to load the 'rotten_tomatoes' prompt at {path}: its hidden size is {wide} but the base "
                f"model {tiny_causal.spec!r} has hidden size {tiny_causal.hidden_size} (shape (20, {wide}); "
                f"expected (n_tokens, {tiny_causal.hidden_size}))")
    with pytest.raises(ArtifactError) as err:
        load_prompt_with_base(path, base=tiny_causal)
    assert str(err.value) == expected
    result = CliRunner().invoke(app, ["predict", "rotten_tomatoes", "a fine film", "--prompt", str(path),
                                      "--base", tiny_causal.spec])
    assert result.exit_code != 0 and str(result.exception) == expected


def test_a_prompt_trained_in_another_layout_loads_with_a_warning(tiny_causal, tiny_causal_nobos, tmp_path, caplog):
    """Same weights (same fingerprint), tokenizers with and without BOS: a prompt trained as [prompt][text]
    runs as [BOS][prompt][text] on the other, so loading it says so; a matching or unrecorded layout is quiet."""
    weight = torch.randn(4, tiny_causal.hidden_size)
    meta = PromptMeta("rotten_tomatoes", tiny_causal.spec, tiny_causal.fingerprint,
                      prompt_layout=tiny_causal_nobos.prompt_layout)
    path = save_prompt(tmp_path / "p", weight, meta)
    with caplog.at_level("WARNING", logger="ptune.model.layout"):
        load_prompt_with_base(path, base=tiny_causal_nobos)
        assert caplog.text == ""
        loaded = load_prompt_with_base(path, base=tiny_causal)
    assert torch.equal(loaded.prompt, weight)
    assert "was trained as [prompt][text]" in caplog.text and "now runs prompts as [BOS][prompt][text]" in caplog.text
    caplog.clear()
    from ptune.data.catalog import get_task
    from ptune.serving.multi_prompt import MultiPromptModel

    with caplog.at_level("WARNING", logger="ptune.model.layout"):  # the server checks the same
        MultiPromptModel(tiny_causal).load(get_task("rotten_tomatoes"), path, version="1")
    assert "now runs prompts as [BOS][prompt][text]" in caplog.text
    caplog.clear()
    old = save_prompt(tmp_path / "old", weight, _meta(tiny_causal))  # no layout recorded: nothing to go on
    with caplog.at_level("WARNING", logger="ptune.model.layout"):
        load_prompt_with_base(old, base=tiny_causal)
    assert caplog.text == ""
