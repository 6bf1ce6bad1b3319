"""Prompt artifacts: round trip, atomic replacement, and every validation failure load_prompt reports."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from ptune.errors import ArtifactError
from ptune.fileio import sha256_of as file_sha256
from ptune.model import artifacts
from ptune.model.artifacts import META_FILE, TENSOR_FILE, PromptMeta, load_prompt, save_prompt

FP = "f" * 32


def _meta(**kw) -> PromptMeta:
    base = dict(task="rotten_tomatoes", base_spec="tiny", base_fingerprint=FP, init="labels",
                label_words=("negative", "positive"), template="Review: {text}\nSentiment:",
                train_config={"lr": 0.3, "steps": 10}, data_version="abc123", metrics={"test/accuracy": 0.75})
    base.update(kw)
    return PromptMeta(**base)


@pytest.fixture
def saved(tmp_path):
    tensor = torch.randn(4, 8)
    return save_prompt(tmp_path / "prompt", tensor, _meta()), tensor


def _edit_json(path, **changes):
    data = json.loads((path / META_FILE).read_text())
    data.update(changes)
    (path / META_FILE).write_text(json.dumps(data))


def test_round_trip(saved):
    path, tensor = saved
    loaded, meta = load_prompt(path, expected_fingerprint=FP)
    assert torch.equal(loaded, tensor) and loaded.dtype == torch.float32
    assert meta == _meta(n_tokens=4, hidden=8, sha256=file_sha256(path / TENSOR_FILE))
    assert sorted(p.name for p in path.iterdir()) == [META_FILE, TENSOR_FILE]


def test_json_layout_matches_design(saved):
    data = json.loads((saved[0] / META_FILE).read_text())
    assert data["format_version"] == 1
    assert data["base_model"] == {"spec": "tiny", "fingerprint": FP}
    assert {"task", "n_tokens", "hidden", "init", "label_words", "template", "train_config", "data_version",
            "metrics", "sha256"} <= set(data)
    assert PromptMeta.from_dict(data).to_dict() == data


def test_replace_existing_is_atomic_and_leaves_no_temp(saved, tmp_path):
    path, _ = saved
    new = torch.ones(2, 8)
    save_prompt(path, new, _meta(task="other"))
    loaded, meta = load_prompt(path)
    assert torch.equal(loaded, new) and meta.task == "other"
    assert [p.name for p in tmp_path.iterdir()] == ["prompt"]


def test_failed_save_keeps_previous_artifact(saved, tmp_path, monkeypatch):
    path, tensor = saved

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_prompt(path, torch.zeros(4, 8), _meta())
    assert torch.equal(load_prompt(path)[0], tensor)
    assert [p.name for p in tmp_path.iterdir()] == ["prompt"]


@pytest.mark.parametrize("bad,needle", [
    (torch.full((2, 8), float("nan")), "non-finite"),
    (torch.zeros(8), "2-D"),
])
def test_save_refuses_bad_tensors(tmp_path, bad, needle):
    with pytest.raises(ArtifactError, match=needle):
        save_prompt(tmp_path / "p", bad, _meta())
    assert not (tmp_path / "p").exists()


def test_save_refuses_meta_shape_disagreement(tmp_path):
    with pytest.raises(ArtifactError, match="meta.n_tokens=5 but the tensor has 4"):
        save_prompt(tmp_path / "p", torch.zeros(4, 8), _meta(n_tokens=5))


def test_missing_dir_and_files(tmp_path, saved):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_prompt(tmp_path / "nope")
    path, _ = saved
    (path / META_FILE).unlink()
    (path / TENSOR_FILE).unlink()
    with pytest.raises(ArtifactError) as info:
        load_prompt(path)
    assert f"missing {META_FILE}" in str(info.value) and f"missing {TENSOR_FILE}" in str(info.value)
    assert str(path) in str(info.value)


def test_tampered_tensor_checksum_mismatch(saved):
    path, _ = saved
    save_file({"prompt_embeddings": torch.zeros(4, 8)}, str(path / TENSOR_FILE))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_prompt(path)


def test_fingerprint_mismatch_names_both(saved):
    with pytest.raises(ArtifactError) as info:
        load_prompt(saved[0], expected_fingerprint="0" * 32)
    assert FP in str(info.value) and "0" * 32 in str(info.value) and "'tiny'" in str(info.value)


def test_all_problems_listed_together(saved):
    path, _ = saved
    save_file({"prompt_embeddings": torch.full((3, 8), float("inf"))}, str(path / TENSOR_FILE))
    _edit_json(path, format_version=1)
    with pytest.raises(ArtifactError) as info:
        load_prompt(path, expected_fingerprint="0" * 32)
    text = str(info.value)
    for needle in ("shape (3, 8)", "non-finite", "checksum mismatch", "base model mismatch"):
        assert needle in text


@pytest.mark.parametrize("change,needle", [
    ({"format_version": 99}, "format_version 99 not supported"),
    ({"n_tokens": "four"}, "'n_tokens' has type str"),
    ({"base_model": {"spec": "x"}}, "base_model.fingerprint"),
])
def test_bad_metadata(saved, change, needle):
    _edit_json(saved[0], **change)
    with pytest.raises(ArtifactError, match=needle):
        load_prompt(saved[0])


def test_missing_field_and_bad_json(saved):
    path, _ = saved
    data = json.loads((path / META_FILE).read_text())
    del data["task"]
    (path / META_FILE).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="missing field 'task'"):
        load_prompt(path)
    (path / META_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_prompt(path)


@pytest.mark.parametrize("tensors,needle", [
    ({"prompt_embeddings": torch.zeros(4, 8, dtype=torch.float16)}, "dtype is torch.float16"),
    ({"weight": torch.zeros(4, 8)}, "exactly one tensor"),
    ({"prompt_embeddings": torch.zeros(4, 8), "extra": torch.zeros(1)}, "exactly one tensor"),
])
def test_bad_tensor_file(saved, tensors, needle):
    path, _ = saved
    save_file(tensors, str(path / TENSOR_FILE))
    _edit_json(path, sha256=file_sha256(path / TENSOR_FILE))  # only the tensor problem remains
    with pytest.raises(ArtifactError, match=needle):
        load_prompt(path)


def test_corrupt_tensor_file(saved):
    path, _ = saved
    (path / TENSOR_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        load_prompt(path)


def test_no_pickle_in_artifact(saved):
    """Exactly a safetensors file and a JSON file, each read back by a parser that cannot run code: no pickle
    (protocol marker \\x80), no torch.save zip (PK), no other file, no empty directory."""
    from safetensors import safe_open

    files = {f.name: f for f in saved[0].iterdir()}
    assert set(files) == {"prompt.safetensors", META_FILE}
    assert isinstance(json.loads(files[META_FILE].read_text()), dict)
    with safe_open(str(files["prompt.safetensors"]), "pt") as tensors:
        assert list(tensors.keys()) == ["prompt_embeddings"]
        assert torch.equal(tensors.get_tensor("prompt_embeddings"), saved[1])
    for file in files.values():
        data = file.read_bytes()
        assert data and not data.startswith((b"\x80", b"PK")), file.name


def test_save_load_gives_identical_logits(tiny_base, tmp_path):
    """A prompt written to disk and read back drives the model to bitwise-identical logits."""
    from ptune.model.batching import collate, encode_pair
    from ptune.model.soft_prompt import prompt_inputs

    prompt = torch.randn(5, tiny_base.hidden_size) * 0.1
    meta = _meta(base_spec=tiny_base.spec, base_fingerprint=tiny_base.fingerprint)
    path = save_prompt(tmp_path / "prompt", prompt, meta)
    loaded, _ = load_prompt(path, expected_fingerprint=tiny_base.fingerprint)
    item = encode_pair(tiny_base.tokenizer, "the film was good", "positive",
                       encoder_decoder=tiny_base.is_encoder_decoder, add_eos=False, max_source_tokens=32)
    batch = collate([item], tiny_base.tokenizer.pad_token_id, tiny_base.is_encoder_decoder)
    with torch.no_grad():
        before = tiny_base.model(**prompt_inputs(tiny_base, prompt, **batch)).logits
        after = tiny_base.model(**prompt_inputs(tiny_base, loaded, **batch)).logits
    assert torch.equal(before, after)
