"""PEFT interoperability: exported adapters load in PeftModel with identical logits; imports round trip.

Also pins the soft-prompt forward against no-cache references (OFFLINE.md: peft 0.21.2 + transformers
5.24 re-adds virtual tokens in cached generate, and drops position ids for left-padded rows)."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel, PromptTuningConfig, get_peft_model
from safetensors.torch import load_file, save_file

from ptune.errors import ArtifactError
from ptune.model.artifacts import PromptMeta, load_prompt, save_prompt
from ptune.model.batching import collate, encode_pair, left_pad
from ptune.model.soft_prompt import SoftPrompt, prompt_inputs
from ptune.registry.peft_interop import ADAPTER_CONFIG, ADAPTER_WEIGHTS, export_peft, import_peft

P = 5
PAIRS = [("the film was good and fun", "positive"), ("bad", "negative"), ("dull plot", "negative")]


def _batch(base) -> dict[str, torch.Tensor]:
    items = [encode_pair(base.tokenizer, s, t, encoder_decoder=base.is_encoder_decoder, add_eos=True,
                         max_source_tokens=64) for s, t in PAIRS]
    return collate(items, base.tokenizer.pad_token_id, base.is_encoder_decoder)  # right padded


def _artifact(base, tmp_path, seed: int = 0):
    weight = torch.randn(P, base.hidden_size, generator=torch.Generator().manual_seed(seed))  # (P, d)
    return save_prompt(tmp_path / "prompt", weight, PromptMeta("t", base.spec, base.fingerprint)), weight


@pytest.mark.parametrize("name", ["tiny_causal_nobos", "tiny_t5"])
def test_peft_from_pretrained_gives_identical_logits(name, tmp_path, request, caplog):
    """Exact where both put the prompt first: causal tokenizers without BOS (SmolLM2) and T5."""
    tiny_base = request.getfixturevalue(name)
    path, weight = _artifact(tiny_base, tmp_path)
    out = export_peft(path, tmp_path / "adapter", tiny_base)
    batch = _batch(tiny_base)
    with torch.no_grad():
        ours = tiny_base.model(**prompt_inputs(tiny_base, weight, **batch), use_cache=False)
        peft_model = PeftModel.from_pretrained(tiny_base.model, out).eval()
        theirs = peft_model(**batch, use_cache=False)
    assert torch.equal(peft_model.get_prompt_embedding_to_save("default"), weight)
    assert torch.allclose(ours.loss, theirs.loss, atol=1e-5)
    assert "PEFT as [prompt][BOS][text]" not in caplog.text
    if tiny_base.is_encoder_decoder:  # prompt on the encoder only: decoder logits (B, L, V) in both
        assert theirs.logits.shape == ours.logits.shape
        assert torch.allclose(ours.logits, theirs.logits, atol=1e-5)
    else:  # causal: (B, P+T, V) in both; compare the real tokens (right padding: positions agree)
        real = batch["attention_mask"].bool()  # (B, T)
        assert torch.allclose(ours.logits[:, P:][real], theirs.logits[:, P:][real], atol=1e-5)


def test_bos_first_model_exports_the_same_weights_and_warns_of_the_layout(tiny_causal, tmp_path, caplog):
    """The tiny causal tokenizer adds BOS: ptune runs [BOS][prompt][text], PEFT [prompt][BOS][text]."""
    path, weight = _artifact(tiny_causal, tmp_path)
    with caplog.at_level("WARNING", logger="ptune.registry.peft_interop"):
        out = export_peft(path, tmp_path / "adapter", tiny_causal)
    assert "ptune runs it as [BOS][prompt][text], PEFT as [prompt][BOS][text]" in caplog.text
    assert torch.equal(load_file(str(out / ADAPTER_WEIGHTS))["prompt_embeddings"], weight)  # (P, d): no BOS row


def test_export_by_name_warns_from_the_layout_the_artifact_records(tiny_causal, tmp_path, caplog):
    """`ptune export --peft` passes a name, not a loaded model: prompt.json's prompt_layout tells."""
    weight = torch.randn(P, tiny_causal.hidden_size)
    meta = PromptMeta("t", tiny_causal.spec, tiny_causal.fingerprint, prompt_layout=tiny_causal.prompt_layout)
    path = save_prompt(tmp_path / "prompt", weight, meta)
    assert load_prompt(path)[1].prompt_layout == "[BOS][prompt][text]"
    with caplog.at_level("WARNING", logger="ptune.registry.peft_interop"):
        export_peft(path, tmp_path / "adapter", "some/gemma")
    assert "PEFT as [prompt][BOS][text]" in caplog.text
    caplog.clear()
    old, _ = _artifact(tiny_causal, tmp_path / "old")  # no prompt_layout recorded: nothing to go on
    export_peft(old, tmp_path / "adapter2", "some/gemma")
    assert "PEFT as" not in caplog.text


def test_adapter_files_and_config(tiny_t5, tmp_path):
    path, weight = _artifact(tiny_t5, tmp_path)
    out = export_peft(path, tmp_path / "adapter", "some/t5-base", task_type="SEQ_2_SEQ_LM")
    config = json.loads((out / ADAPTER_CONFIG).read_text())
    assert {k: config[k] for k in ("peft_type", "task_type", "num_virtual_tokens", "token_dim",
                                   "num_transformer_submodules", "prompt_tuning_init", "base_model_name_or_path")} \
        == {"peft_type": "PROMPT_TUNING", "task_type": "SEQ_2_SEQ_LM", "num_virtual_tokens": P, "token_dim": 32,
            "num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM", "base_model_name_or_path": "some/t5-base"}
    assert PromptTuningConfig.from_pretrained(str(out)).num_virtual_tokens == P
    tensors = load_file(str(out / ADAPTER_WEIGHTS))
    assert list(tensors) == ["prompt_embeddings"] and torch.equal(tensors["prompt_embeddings"], weight)


def test_export_checks_base_and_task_type(tiny_causal, tiny_t5, tmp_path):
    path, _ = _artifact(tiny_causal, tmp_path)
    with pytest.raises(ArtifactError, match="fingerprint"):
        export_peft(path, tmp_path / "a", tiny_t5)
    with pytest.raises(ArtifactError, match=r"allowed values are \['CAUSAL_LM', 'SEQ_2_SEQ_LM'\]"):
        export_peft(path, tmp_path / "a", "x", task_type="SEQ_CLS")
    assert json.loads((export_peft(path, tmp_path / "a", str(tiny_causal.spec)) / ADAPTER_CONFIG)
                      .read_text())["task_type"] == "CAUSAL_LM"  # inferred from the model directory


def test_round_trip_export_import(tiny_base, tmp_path):
    path, weight = _artifact(tiny_base, tmp_path)
    adapter = export_peft(path, tmp_path / "adapter", tiny_base)
    back = import_peft(adapter, tmp_path / "back", tiny_base, task="t2")
    tensor, meta = load_prompt(back, expected_fingerprint=tiny_base.fingerprint)
    assert torch.equal(tensor, weight)
    assert (meta.task, meta.n_tokens, meta.hidden) == ("t2", P, tiny_base.hidden_size)
    assert meta.train_config["imported_from"] == "peft"


def test_import_adapter_saved_by_peft_itself(tiny_causal, tmp_path):
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, prompt_tuning_init="RANDOM")
    model = get_peft_model(tiny_causal.model, config)
    model.save_pretrained(tmp_path / "peft")
    expected = model.get_prompt_embedding_to_save("default")  # (4, d)
    tensor, _ = load_prompt(import_peft(tmp_path / "peft", tmp_path / "ours", tiny_causal, "t"))
    assert torch.equal(tensor, expected)


def _write_adapter(path, tensor, **config):
    path.mkdir()
    base = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": tensor.shape[0],
            "token_dim": tensor.shape[1], "num_transformer_submodules": 1}
    (path / ADAPTER_CONFIG).write_text(json.dumps({**base, **config}))
    save_file({"prompt_embeddings": tensor}, str(path / ADAPTER_WEIGHTS))
    return path


@pytest.mark.parametrize("tensor,config,needle", [
    (torch.zeros(4, 32), {"peft_type": "LORA"}, "only 'PROMPT_TUNING'"),
    (torch.zeros(8, 32), {"num_transformer_submodules": 2, "num_virtual_tokens": 4},
     "num_transformer_submodules=2"),
    (torch.zeros(4, 32), {"num_virtual_tokens": 6}, r"shape \(4, 32\).*\(6, 32\)"),
    (torch.zeros(4, 16), {}, "token_dim=16 but base model"),
    (torch.zeros(4, 32), {"task_type": "SEQ_2_SEQ_LM"}, "needs CAUSAL_LM"),
    (torch.full((4, 32), float("nan")), {}, "non-finite"),
])
def test_import_rejections(tiny_causal, tmp_path, tensor, config, needle):
    adapter = _write_adapter(tmp_path / "adapter", tensor, **config)
    with pytest.raises(ArtifactError, match=needle):
        import_peft(adapter, tmp_path / "out", tiny_causal, "t")
    assert not (tmp_path / "out").exists()


def test_import_refuses_pickle_only_adapter(tiny_causal, tmp_path):
    adapter = _write_adapter(tmp_path / "adapter", torch.zeros(4, 32))
    (adapter / ADAPTER_WEIGHTS).rename(adapter / "adapter_model.bin")
    with pytest.raises(ArtifactError, match="pickle"):
        import_peft(adapter, tmp_path / "out", tiny_causal, "t")


def test_left_padded_rows_equal_rows_alone(tiny_causal):
    """ptune recomputes position ids from the mask, so padding does not change a row (PEFT's does)."""
    tok, prompt = tiny_causal.tokenizer, SoftPrompt(torch.randn(P, tiny_causal.hidden_size))
    rows = [tok(s)["input_ids"] for s, _ in PAIRS]
    ids, mask = left_pad(rows, tok.pad_token_id)  # (B, T)
    with torch.no_grad():
        batched = tiny_causal.model(**prompt_inputs(tiny_causal, prompt.weight, ids, mask), use_cache=False).logits
        for i, row in enumerate(rows):
            one = torch.tensor([row])
            alone = tiny_causal.model(**prompt_inputs(tiny_causal, prompt.weight, one, torch.ones_like(one)),
                                      use_cache=False).logits  # (1, P+len, V)
            assert torch.allclose(batched[i, -len(row):], alone[0, -len(row):], atol=1e-5)


def test_cached_decoding_matches_no_cache_concatenation(tiny_causal_nobos):
    """Greedy decoding with a KV cache after a prompt prefill = a plain no-cache forward of
    [prompt; source; generated] built by hand (the cached-generate pitfall in OFFLINE.md)."""
    model, prompt = tiny_causal_nobos.model, torch.randn(P, tiny_causal_nobos.hidden_size)
    ids = torch.tensor([tiny_causal_nobos.tokenizer("the film was")["input_ids"]])  # (1, T)
    with torch.no_grad():
        out = model(**prompt_inputs(tiny_causal_nobos, prompt, ids, torch.ones_like(ids)), use_cache=True)
        past, generated, cached_logits = out.past_key_values, [], [out.logits[0, -1]]
        for step in range(4):
            nxt = cached_logits[-1].argmax().view(1, 1)
            generated.append(int(nxt))
            pos = torch.tensor([[P + ids.shape[1] + step]])
            mask = torch.ones(1, P + ids.shape[1] + step + 1, dtype=torch.long)
            out = model(input_ids=nxt, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
            past = out.past_key_values
            cached_logits.append(out.logits[0, -1])
        full = torch.cat([ids, torch.tensor([generated])], dim=1)  # (1, T+4)
        embeds = torch.cat([prompt.unsqueeze(0), tiny_causal_nobos.embed(full)], dim=1)  # (1, P+T+4, d)
        ref = model(inputs_embeds=embeds, use_cache=False).logits[0, P + ids.shape[1] - 1:]  # (5, V)
    assert torch.allclose(torch.stack(cached_logits), ref, atol=1e-5)


def test_cli_export_and_import(tiny_causal, tmp_path):
    from typer.testing import CliRunner

    from ptune.cli import app

    path, weight = _artifact(tiny_causal, tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(path), "--peft", str(tmp_path / "adapter")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == tiny_causal.spec
    result = runner.invoke(app, ["import-peft", str(tmp_path / "adapter"), "--task", "t2", "--out", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    assert torch.equal(load_prompt(tmp_path / "q", expected_fingerprint=tiny_causal.fingerprint)[0], weight)
