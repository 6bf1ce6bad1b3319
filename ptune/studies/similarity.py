"""Which other task's prompt is most like this one (SPoT, Vu et al. 2022): every task's @champion prompt in the
registry, ranked by the cosine similarity of its mean-pooled prompt with a target prompt.

Mean pooling ((P, d) -> (d,)) is SPoT's simplest task embedding; it works across prompt lengths. Only
prompts trained on the same base model (equal fingerprint) are comparable, and only those can be transferred.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ptune.model import artifacts
from ptune.registry import model_registry
from ptune.registry.tracking import client, guard

PREFIX = "ptune-"


@dataclass(frozen=True)
class Champion:
    """One task's champion prompt as a transfer source."""

    task: str
    version: str
    prompt: torch.Tensor  # (P, d) fp32
    meta: artifacts.PromptMeta


def champion_versions(alias: str = "champion") -> dict[str, str]:
    """{task: version} of every `ptune-<task>` that has `alias`."""
    with guard("listing of registered models"):
        models = client().search_registered_models(filter_string=f"name LIKE '{PREFIX}%'")
    return {m.name.removeprefix(PREFIX): str(m.aliases[alias]) for m in models
            if isinstance(m.aliases, dict) and alias in m.aliases}


def champions(fingerprint: str, exclude: str = "", alias: str = "champion") -> list[Champion]:
    """The champion prompts of every task but `exclude` trained on the base with `fingerprint`."""
    found = []
    for task, version in sorted(champion_versions(alias).items()):
        if task == exclude:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            prompt, meta = artifacts.load_prompt(model_registry.download_prompt(task, Path(tmp) / "p", version=version))
        if meta.base_fingerprint == fingerprint:
            found.append(Champion(task, version, prompt, meta))
    return found


def pooled_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two prompts' mean-pooled rows: (P1, d), (P2, d) -> scalar in [-1, 1]."""
    return float(torch.nn.functional.cosine_similarity(a.float().mean(0), b.float().mean(0), dim=0))


def rank_by_cosine(target: torch.Tensor, sources: list[Champion]) -> list[tuple[Champion, float]]:
    """(source, cosine) pairs, most similar first."""
    return sorted(((s, pooled_cosine(target, s.prompt)) for s in sources), key=lambda pair: -pair[1])


def download_champion(task: str, out: str | Path, alias: str = "champion") -> Path:
    """The checked prompt dir of `ptune-<task>@alias` at `out` (a source for `train.init: file`)."""
    return model_registry.download_prompt(task, out, alias=alias)
