"""Soft-prompt initialisation: every PromptInit mode on both architectures, and gradient isolation."""

from __future__ import annotations

import pytest
import torch

from ptune.errors import ArtifactError, ConfigError
from ptune.model.artifacts import PromptMeta, save_prompt
from ptune.model.batching import collate, encode_pair, encode_target
from ptune.model.soft_prompt import PromptInit, SoftPrompt, init_prompt, prompt_inputs, vocab_candidate_ids

N = 6
LABELS = ("positive", "negative")


def _make(base, init: PromptInit, tmp_path, seed: int = 0, n: int = N) -> SoftPrompt:
    path = None
    if init is PromptInit.FILE:
        path = tmp_path / "src"
        if not path.exists():
            weight = torch.linspace(-1, 1, n * base.hidden_size).reshape(n, base.hidden_size)
            save_prompt(path, weight, PromptMeta("t", base.spec, base.fingerprint))
    return init_prompt(base, n, init, label_words=LABELS, text="the movie was good", path=path, seed=seed)


@pytest.mark.parametrize("init", list(PromptInit))
def test_shape_dtype_finite_deterministic(tiny_base, init, tmp_path):
    prompt = _make(tiny_base, init, tmp_path)
    assert isinstance(prompt, SoftPrompt)
    assert prompt.weight.shape == (N, tiny_base.hidden_size)
    assert prompt.weight.dtype == torch.float32
    assert torch.isfinite(prompt.weight).all()
    assert prompt.weight.requires_grad
    assert torch.equal(prompt.weight, _make(tiny_base, init, tmp_path).weight)


@pytest.mark.parametrize("init", [PromptInit.RANDOM, PromptInit.VOCAB])
def test_seed_changes_sampled_inits(tiny_base, init, tmp_path):
    assert not torch.equal(_make(tiny_base, init, tmp_path, seed=0).weight,
                           _make(tiny_base, init, tmp_path, seed=1).weight)


def test_random_is_uniform_half(tiny_causal):
    weight = init_prompt(tiny_causal, 50, "random", seed=3).weight
    assert weight.min() >= -0.5 and weight.max() <= 0.5
    assert weight.std() > 0.2  # uniform(-0.5, 0.5) has std 0.289, not a narrow normal


def test_vocab_rows_are_non_special_token_embeddings(tiny_base):
    weight = init_prompt(tiny_base, N, PromptInit.VOCAB, seed=0).weight.detach()
    table = tiny_base.model.get_input_embeddings().weight
    candidates = set(vocab_candidate_ids(tiny_base))
    assert not candidates & set(tiny_base.tokenizer.all_special_ids)
    for row in weight:
        hits = torch.nonzero((table == row).all(dim=1)).flatten().tolist()
        assert hits and set(hits) & candidates


def _label_mean(base, word: str) -> torch.Tensor:
    ids = encode_target(base.tokenizer, word, base.is_encoder_decoder, add_eos=False)
    return base.model.get_input_embeddings().weight[ids].mean(dim=0)


def test_labels_rows_are_label_word_means(tiny_base):
    words = ("positive", "negative", "neutral")
    weight = init_prompt(tiny_base, N, "labels", label_words=words, seed=0).weight.detach()
    for i, word in enumerate(words):
        assert torch.allclose(weight[i], _label_mean(tiny_base, word), atol=1e-6)
    table = tiny_base.model.get_input_embeddings().weight
    candidates = vocab_candidate_ids(tiny_base)
    for row in weight[len(words):]:  # the rest are embeddings of vocab-init candidate tokens
        assert (table[candidates] == row).all(dim=1).any()


def test_labels_more_than_tokens_are_averaged_per_row(tiny_causal):
    words = ("good", "bad", "yes", "no", "maybe")
    weight = init_prompt(tiny_causal, 2, "labels", label_words=words).weight.detach()
    means = torch.stack([_label_mean(tiny_causal, w) for w in words])
    assert torch.allclose(weight[0], means[[0, 2, 4]].mean(0), atol=1e-6)
    assert torch.allclose(weight[1], means[[1, 3]].mean(0), atol=1e-6)


def test_text_is_cycled_and_truncated(tiny_causal):
    ids = tiny_causal.tokenizer("good bad", add_special_tokens=False)["input_ids"]
    table = tiny_causal.model.get_input_embeddings().weight
    long = init_prompt(tiny_causal, len(ids) * 2 + 1, "text", text="good bad").weight.detach()
    assert torch.equal(long, table[(ids * 3)[: len(ids) * 2 + 1]])
    short = init_prompt(tiny_causal, 1, "text", text="good bad").weight.detach()
    assert torch.equal(short, table[ids[:1]])


def test_file_init_copies_artifact_and_checks_base_and_shape(tiny_causal, tiny_t5, tmp_path):
    prompt = _make(tiny_causal, PromptInit.FILE, tmp_path)
    assert torch.equal(prompt.weight.detach(), torch.linspace(-1, 1, N * 32).reshape(N, 32))
    with pytest.raises(ConfigError, match=r"\(6, 32\).*\(4, 32\)"):
        init_prompt(tiny_causal, 4, "file", path=tmp_path / "src")
    with pytest.raises(ArtifactError, match="fingerprint"):
        init_prompt(tiny_t5, N, "file", path=tmp_path / "src")


def test_invalid_init_lists_allowed_values(tiny_causal):
    with pytest.raises(ConfigError) as info:
        init_prompt(tiny_causal, 4, "sampled")
    message = str(info.value)
    assert "'sampled'" in message
    for mode in PromptInit:
        assert repr(mode.value) in message


def test_all_problems_reported_at_once(tiny_causal):
    with pytest.raises(ConfigError) as info:
        init_prompt(tiny_causal, 0, "bogus")
    assert "n_tokens=0" in str(info.value) and "init='bogus'" in str(info.value)


@pytest.mark.parametrize("init,kwargs,needle", [
    ("text", {}, "text=None"), ("text", {"text": "  "}, "text='  '"), ("file", {}, "path=None"),
    ("labels", {"label_words": ("ok", "")}, "label_words"),
])
def test_mode_specific_arguments_required(tiny_causal, init, kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        init_prompt(tiny_causal, 4, init, **kwargs)


@pytest.mark.parametrize("init", list(PromptInit))
def test_only_prompt_receives_gradient(tiny_base, init, tmp_path):
    prompt = _make(tiny_base, init, tmp_path)
    items = [encode_pair(tiny_base.tokenizer, "the film was good", "positive",
                         encoder_decoder=tiny_base.is_encoder_decoder, add_eos=False, max_source_tokens=32)]
    batch = collate(items, tiny_base.tokenizer.pad_token_id, tiny_base.is_encoder_decoder)
    assert all(not p.requires_grad for p in tiny_base.model.parameters())
    out = tiny_base.model(**prompt_inputs(tiny_base, prompt(1), **batch))
    out.loss.backward()
    assert prompt.weight.grad is not None and prompt.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_base.model.parameters())


def test_labels_without_label_words_falls_back_to_vocab(tiny_base, caplog):
    weight = init_prompt(tiny_base, N, "labels", label_words=(), seed=2).weight
    assert torch.equal(weight, init_prompt(tiny_base, N, "vocab", seed=2).weight)
    assert "using 'vocab'" in caplog.text
