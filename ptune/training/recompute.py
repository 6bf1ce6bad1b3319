"""train.gradient_checkpointing: keep only each frozen decoder layer's input and recompute the layer in the backward.

Prompt tuning keeps every layer's activations, since the gradient must reach the prompt through all of them: 16.8 of
the 20.9 GiB a 7B nf4 base needs at batch 8 x 512 (`ptune.model.memory`). Recomputing cuts that to about 2 GiB for
about 1.5x the step time on this CPU (docs/training.md "Gradient checkpointing").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ptune.errors import ConfigError
from ptune.model.base import BaseModel
from ptune.model.soft_prompt import prompt_inputs, shared_prompt_inputs


def step_inputs(base: BaseModel, prompt: torch.Tensor, batch: dict[str, torch.Tensor], checkpointing: bool) -> dict:
    """The step's model inputs: the prompt's pass run once and shared by the rows, or, checkpointed (a layer's
    recompute cannot see a cache), the prompt in every row (B, P+T) and no decoder cache."""
    if not checkpointing:
        return shared_prompt_inputs(base, prompt, **batch)
    kwargs = prompt_inputs(base, prompt, **batch)
    return {**kwargs, "use_cache": False} if base.is_encoder_decoder else kwargs


@contextlib.contextmanager
def recomputed_layers(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """train.gradient_checkpointing: autograd keeps only each decoder layer's input (B, P+T, d) and the backward
    recomputes the layer (transformers' activation checkpointing, non-reentrant: the prompt is the only leaf that
    needs a gradient). transformers checkpoints a layer only while that layer is in training mode, so the flag is
    set on the layers alone, not their submodules: dropout stays off. On exit, even on error, every flag is as it
    was (the base model is shared with evaluation). transformers drops a layer's cache under checkpointing, so
    the shared prompt pass cannot be used: the caller runs the prompt in every row (`step_inputs`)."""
    if not enabled:
        yield
        return
    from transformers.modeling_layers import GradientCheckpointingLayer

    keys = ("training", "gradient_checkpointing", "_gradient_checkpointing_func", "_require_grads_hooks",
            "_require_grads_hook")  # what enabling sets (on the model and every module with the flag)
    flagged = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]
    before = [(m, {k: m.__dict__[k] for k in keys if k in m.__dict__}) for m in [model, *flagged]]
    hooks = list(model.__dict__.get("_require_grads_hooks", []))
    try:
        try:
            if hasattr(model, "activation_checkpointing_enable"):  # its older name warns since transformers 5.2x
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        except (AttributeError, ValueError) as err:
            raise ConfigError(f"train.gradient_checkpointing = true: {type(model).__name__} does not support "
                              f"activation checkpointing ({err})") from None
        for hook in set(model.__dict__.get("_require_grads_hooks", [])) - set(hooks):
            hook.remove()  # enabling makes the token embeddings require grad (for adapters): not needed here
        for m in flagged:
            m.training = m.training or isinstance(m, GradientCheckpointingLayer)
        yield
    finally:
        for m, saved in before:
            for key in keys:
                m.__dict__.pop(key, None)
            m.__dict__.update(saved)
