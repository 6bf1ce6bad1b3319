"""Base models: resolve a spec (built-in name, local directory, hub id) to a frozen model + tokenizer.

OWNER NOTE: skeleton. `BaseModel`, `freeze`, `fingerprint` and `from_objects` are the contract the
rest of ptune codes against; loading of the built-in `smollm2-135m`, thread and device choice are
filled in by the models work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class BaseModel:
    """A frozen pretrained model with its tokenizer and identity."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: str  # what the user asked for: "smollm2-135m", a directory, or a hub id
    fingerprint: str  # sha256 over config + input-embedding matrix (see `fingerprint`)

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(self.model.config.is_encoder_decoder)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> input embeddings (B, T, d) of the frozen model."""
        return self.model.get_input_embeddings()(input_ids)


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """Eval mode, no gradients for any base parameter."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def fingerprint(model: PreTrainedModel) -> str:
    """sha256 of the model config (architecture fields) and the input-embedding matrix bytes."""
    config = model.config.to_dict()
    keep = {k: config[k] for k in sorted(config) if k in _FINGERPRINT_KEYS}
    digest = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
    weight = model.get_input_embeddings().weight.detach().to("cpu", torch.float32).contiguous()
    digest.update(weight.numpy().tobytes())
    return digest.hexdigest()[:32]


_FINGERPRINT_KEYS = {
    "model_type", "architectures", "hidden_size", "d_model", "num_hidden_layers", "num_layers",
    "num_attention_heads", "num_heads", "vocab_size", "intermediate_size", "d_ff",
    "tie_word_embeddings", "is_encoder_decoder",
}


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give causal tokenizers a pad token (eos) so batches can be padded."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def from_objects(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: str) -> BaseModel:
    """Wrap an already-built model (tests, callers that loaded it themselves)."""
    freeze(model)
    return BaseModel(model, prepare_tokenizer(tokenizer), spec, fingerprint(model))
