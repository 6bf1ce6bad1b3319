"""Load a prompt together with the base model it was trained on, from a directory or a registry URI.

The one place that does "load the prompt, load the base model it names, check the fingerprint":
the pyfunc, the CLI (`eval`, `predict`, `pull --verify-base`), promotion and the stages all call it.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ptune.errors import ArtifactError, RegistryError
from ptune.model import artifacts
from ptune.model.artifacts import PromptMeta
from ptune.model.base import BaseModel, load_base_model
from ptune.model.layout import warn_if_layout_differs
from ptune.registry import model_registry

MODEL_URI = re.compile(r"^models:/ptune-(?P<task>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class LoadedPrompt:
    prompt: torch.Tensor  # (P, d) fp32 on CPU
    meta: PromptMeta
    base: BaseModel  # the frozen base model the prompt was trained on (fingerprint checked)


def load_prompt_with_base(source: str | Path, *, base: BaseModel | None = None) -> LoadedPrompt:
    """`source` is a prompt directory or `models:/ptune-<task>@<alias>` / `models:/ptune-<task>/<version>`.

    `base` is reused when its fingerprint is the prompt's; otherwise the base model named in prompt.json
    is loaded, and a fingerprint that differs from the prompt's is refused with an ArtifactError."""
    match = MODEL_URI.match(str(source))
    if match is None and str(source).startswith("models:/"):
        raise RegistryError(f"{source}: expected models:/ptune-<task>@<alias> or models:/ptune-<task>/<version>")
    if match is None:
        return _load(Path(source), base)
    with tempfile.TemporaryDirectory() as tmp:
        prompt_dir = model_registry.download_prompt(match["task"], Path(tmp) / "prompt",
                                                    alias=match["alias"], version=match["version"])
        return _load(prompt_dir, base)


def _load(prompt_dir: Path, base: BaseModel | None) -> LoadedPrompt:
    _, meta = artifacts.load_prompt(prompt_dir)  # checksum, shape, dtype, finiteness
    if base is None or base.fingerprint != meta.base_fingerprint:
        base = load_base_model(meta.base_spec)
    if base.fingerprint != meta.base_fingerprint:
        raise ArtifactError(
            f"refusing to load the {meta.task!r} prompt at {prompt_dir}: base model mismatch: it was trained on "
            f"{meta.base_spec!r} with fingerprint {meta.base_fingerprint}, but {meta.base_spec!r} now loads with "
            f"fingerprint {base.fingerprint} (a different model; retrain the prompt or restore that base model)")
    prompt, meta = artifacts.load_prompt(prompt_dir, expected_fingerprint=base.fingerprint)
    if prompt.shape[1] != base.hidden_size:
        raise ArtifactError(
            f"refusing to load the {meta.task!r} prompt at {prompt_dir}: its hidden size is {prompt.shape[1]} but "
            f"the base model {meta.base_spec!r} has hidden size {base.hidden_size} (shape {tuple(prompt.shape)}; "
            f"expected (n_tokens, {base.hidden_size}))")
    warn_if_layout_differs(meta, base, prompt_dir)
    return LoadedPrompt(prompt, meta, base)
