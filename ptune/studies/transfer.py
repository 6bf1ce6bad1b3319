"""Prompt transfer between tasks (SPoT, Vu et al. 2022): rank other tasks' champion prompts as sources for a
target task (`ptune similar`), and start the target's training from one (`ptune train --transfer-from`).

The target task is represented by its own champion prompt, else the prompt left in its run dir, else the
prompt its train config would start from (so a task never trained yet can still pick a source). The cheaper
and more direct proxy (`proxy=True`) scores each source prompt on the target's validation split with no
training at all (model selection on validation only).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ptune.errors import ConfigError
from ptune.model.artifacts import PromptMeta, load_prompt
from ptune.model.base import BaseModel
from ptune.model.soft_prompt import init_prompt
from ptune.pipeline import stages
from ptune.studies import similarity

SOURCE_DIR = "transfer_source"  # <run root>/transfer_source: the source prompt a transfer run starts from


@dataclass(frozen=True)
class Source:
    """One candidate source prompt for the target task."""

    task: str
    version: str
    cosine: float  # mean-pooled prompt cosine with the target's prompt
    proxy: float | None  # the source prompt's primary validation metric on the target task (no training)
    n_tokens: int


def target_prompt(run: stages.TaskRun, base: BaseModel) -> tuple[torch.Tensor, str]:
    """(prompt (P, d), where it came from) standing for the target task."""
    if run.name in similarity.champion_versions():
        prompt, meta = _own_champion(run)
        if meta.base_fingerprint == base.fingerprint:
            return prompt, f"ptune-{run.name}@champion"
    if run.paths.prompt_dir.is_dir():
        prompt, _ = load_prompt(run.paths.prompt_dir)
        if prompt.shape[1] == base.hidden_size:
            return prompt, str(run.paths.prompt_dir)
    cfg = run.params.train
    init = "labels" if cfg.init == "file" else cfg.init
    start = init_prompt(base, cfg.n_tokens, init, label_words=run.spec.label_words, text=cfg.init_text, seed=cfg.seed)
    return start.weight.detach().cpu(), f"init '{init}'"


def _own_champion(run: stages.TaskRun) -> tuple[torch.Tensor, PromptMeta]:
    with tempfile.TemporaryDirectory() as tmp:
        return load_prompt(similarity.download_champion(run.name, Path(tmp) / "p"))


def similar(run: stages.TaskRun, base: BaseModel, *, proxy: bool = False) -> list[Source]:
    """Other tasks' champions on this base model, by cosine (or by the validation proxy when `proxy`)."""
    target, _ = target_prompt(run, base)
    key = f"validation/{run.spec.metrics[0]}"
    found = []
    for champ, cosine in similarity.rank_by_cosine(target, similarity.champions(base.fingerprint, exclude=run.name)):
        score = (stages.evaluate(run, base, champ.prompt, split="validation", progress=False).metrics[key]
                 if proxy else None)
        found.append(Source(champ.task, champ.version, round(cosine, 6), score, int(champ.prompt.shape[0])))
    return sorted(found, key=lambda s: -s.proxy) if proxy else found


def with_transfer(run: stages.TaskRun, base: BaseModel, source: str, *, proxy: bool = False) -> stages.TaskRun:
    """`run` set to start training from `source`'s champion prompt (`auto`: the top of `similar`):
    downloaded to <root>/transfer_source, then `train.init: file`, `init_path` and the source's n_tokens."""
    if source == "auto":
        ranked = similar(run, base, proxy=proxy)
        if not ranked:
            raise ConfigError(f"--transfer-from auto: no other task has a @champion prompt trained on this base "
                              f"model (fingerprint {base.fingerprint}); train one first or name a source task")
        source = ranked[0].task
    if source == run.name:
        raise ConfigError(f"--transfer-from {source}: a task cannot be its own transfer source")
    path = similarity.download_champion(source, run.paths.root / SOURCE_DIR)
    prompt, _ = load_prompt(path, expected_fingerprint=base.fingerprint)
    params = run.params.with_overrides("--transfer-from", train={"init": "file", "init_path": str(path),
                                                                "n_tokens": int(prompt.shape[0])})
    return dataclasses.replace(run, params=params)
