"""Interoperability with PEFT's PromptTuning adapters (checked against peft 0.21.2).

A PEFT prompt-tuning adapter directory holds `adapter_config.json` and `adapter_model.safetensors`
with one tensor `prompt_embeddings` of shape (num_virtual_tokens * num_transformer_submodules,
token_dim) (peft.tuners.tuners_utils.BasePromptEncoder._get_adapter_state_dict). We always write
num_transformer_submodules=1: the prompt goes in front of the (encoder) input only, as ptune does.

Differences to keep in mind when comparing outputs: PEFT ignores `position_ids` for prompt tuning (so
left-padded rows get different positions than ptune's), and its causal-LM logits include the P
virtual-token positions in front. On a causal LM whose tokenizer adds BOS (Gemma, Llama), ptune runs
[BOS][prompt][text] (`ptune.model.layout`) while PEFT always runs [prompt][BOS][text]: the same weights,
another layout, so export and import warn there (docs/models.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ptune.errors import ArtifactError
from ptune.fileio import DirKind, atomic_dir
from ptune.model.artifacts import PromptMeta, load_prompt, save_prompt
from ptune.model.base import BOS_FIRST, BaseModel

logger = logging.getLogger(__name__)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_KEY = "prompt_embeddings"
TASK_TYPES = ("CAUSAL_LM", "SEQ_2_SEQ_LM")
# What `export_peft` writes (PEFT's own save_pretrained adds a README.md model card, which ptune does not write:
# one there may be the user's, so such a directory is refused rather than replaced).
ADAPTER_DIR = DirKind("PEFT adapter", files=(ADAPTER_CONFIG, ADAPTER_WEIGHTS))


def export_peft(prompt_dir: str | Path, out_dir: str | Path, base_model_name_or_path: str | BaseModel,
                task_type: str | None = None) -> Path:
    """Write the ptune artifact at `prompt_dir` as a PEFT PromptTuning adapter in `out_dir`.

    `base_model_name_or_path` is recorded in adapter_config.json (PEFT uses it to find the base when a
    user loads the adapter alone). Given a BaseModel, its spec is recorded, the task type follows its
    architecture and the artifact's fingerprint is checked against it. `task_type` is CAUSAL_LM or
    SEQ_2_SEQ_LM; None infers it (BaseModel, or a local model directory's config; else CAUSAL_LM)."""
    base = base_model_name_or_path if isinstance(base_model_name_or_path, BaseModel) else None
    name = base.spec if base is not None else str(base_model_name_or_path)
    tensor, meta = load_prompt(prompt_dir, expected_fingerprint=base.fingerprint if base is not None else None)
    kind = _task_type(task_type, base, name)
    _warn_layout(base.prompt_layout if base is not None else meta.prompt_layout, name, "exported to PEFT")
    config = _peft_config(kind, tensor.shape[0], tensor.shape[1], name)
    out = Path(out_dir)
    with atomic_dir(out, ADAPTER_DIR) as tmp:
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file({PEFT_KEY: tensor.contiguous()}, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return out


def _warn_layout(layout: str, base_name: str, what: str) -> None:
    """Warn where PEFT's layout differs from ptune's: a BOS-first base model (`ptune.model.layout`), known from
    the loaded base or, for an export by name, from the layout the artifact records."""
    if layout == BOS_FIRST:
        logger.warning("prompt %s for %s: ptune runs it as [BOS][prompt][text], PEFT as [prompt][BOS][text]; "
                       "outputs differ between the two (docs/models.md)", what, base_name)


def _task_type(task_type: str | None, base: BaseModel | None, name: str) -> str:
    """Resolve the PEFT task type; ArtifactError naming the allowed values when it is wrong."""
    if task_type is None:
        if base is not None:
            return "SEQ_2_SEQ_LM" if base.is_encoder_decoder else "CAUSAL_LM"
        config = Path(name) / "config.json"
        if config.is_file():
            return "SEQ_2_SEQ_LM" if json.loads(config.read_text()).get("is_encoder_decoder") else "CAUSAL_LM"
        return "CAUSAL_LM"
    kind = str(getattr(task_type, "value", task_type)).upper()
    if kind not in TASK_TYPES:
        raise ArtifactError(f"task_type={task_type!r}: allowed values are {list(TASK_TYPES)}")
    if base is not None and (kind == "SEQ_2_SEQ_LM") != base.is_encoder_decoder:
        raise ArtifactError(f"task_type={kind} does not fit base model {base.spec!r} "
                            f"(is_encoder_decoder={base.is_encoder_decoder})")
    return kind


def _peft_config(task_type: str, n_tokens: int, hidden: int, base_name: str) -> dict[str, Any]:
    """adapter_config.json as peft 0.21.2's PromptTuningConfig.save_pretrained writes it."""
    from peft import PromptTuningConfig, __version__  # lazy: peft is heavy and only needed here

    config = PromptTuningConfig(task_type=task_type, num_virtual_tokens=n_tokens, token_dim=hidden,
                                num_transformer_submodules=1, prompt_tuning_init="RANDOM",
                                base_model_name_or_path=base_name)
    data = config.to_dict()
    data["peft_version"] = __version__
    for key, value in list(data.items()):  # enums -> plain strings, sets -> lists (JSON)
        data[key] = getattr(value, "value", value)
        if isinstance(value, set):
            data[key] = sorted(value)
    return data


def read_peft_adapter(adapter_dir: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read and validate a PEFT prompt-tuning adapter -> (prompt (P, d) fp32 CPU, adapter config).

    Refuses other PEFT methods, num_transformer_submodules != 1, pickle-only adapters and shapes that
    disagree with the config; one ArtifactError lists every problem with the path."""
    path = Path(adapter_dir)
    if not (path / ADAPTER_CONFIG).is_file():
        raise ArtifactError(f"PEFT adapter {path}: missing {ADAPTER_CONFIG}")
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"PEFT adapter {path}: {ADAPTER_CONFIG} is not valid JSON: {exc}") from exc
    problems = _config_problems(config)
    tensor = _read_adapter_tensor(path, problems)
    if tensor is not None and not problems:
        expected = (config["num_virtual_tokens"], config["token_dim"])
        if tuple(tensor.shape) != expected:
            problems.append(f"{PEFT_KEY} has shape {tuple(tensor.shape)}, adapter_config says "
                            f"(num_virtual_tokens, token_dim) = {expected}")
        elif not torch.isfinite(tensor).all():
            problems.append(f"{PEFT_KEY} has non-finite values (nan/inf)")
    if problems:
        raise ArtifactError(f"cannot import PEFT adapter {path}:\n  - " + "\n  - ".join(problems))
    return tensor.to(torch.float32), config


def _config_problems(config: Any) -> list[str]:
    """What makes adapter_config.json unusable as a ptune prompt."""
    if not isinstance(config, dict):
        return [f"{ADAPTER_CONFIG} must hold a JSON object"]
    problems = []
    if config.get("peft_type") != "PROMPT_TUNING":
        problems.append(f"peft_type={config.get('peft_type')!r}: only 'PROMPT_TUNING' adapters can be imported")
    if config.get("task_type") not in TASK_TYPES:
        problems.append(f"task_type={config.get('task_type')!r}: allowed values are {list(TASK_TYPES)}")
    if config.get("num_transformer_submodules", 1) != 1:
        problems.append(f"num_transformer_submodules={config.get('num_transformer_submodules')!r}: only 1 is "
                        "supported (a prompt for the encoder/input only)")
    for key in ("num_virtual_tokens", "token_dim"):
        if not isinstance(config.get(key), int) or config[key] < 1:
            problems.append(f"{key}={config.get(key)!r}: must be a positive integer")
    return problems


def _read_adapter_tensor(path: Path, problems: list[str]) -> torch.Tensor | None:
    """The `prompt_embeddings` tensor of adapter_model.safetensors (never a pickle .bin)."""
    file = path / ADAPTER_WEIGHTS
    if not file.is_file():
        extra = " (adapter_model.bin is pickle and is not read; re-save with safe_serialization=True)" \
            if (path / "adapter_model.bin").exists() else ""
        problems.append(f"missing {ADAPTER_WEIGHTS}{extra}")
        return None
    try:
        with safe_open(str(file), framework="pt") as fh:
            keys = list(fh.keys())
            if PEFT_KEY not in keys:
                problems.append(f"{ADAPTER_WEIGHTS} has no tensor {PEFT_KEY!r} (found {keys})")
                return None
            return fh.get_tensor(PEFT_KEY)
    except Exception as exc:  # corrupt header
        problems.append(f"{ADAPTER_WEIGHTS} is not a readable safetensors file: {exc}")
        return None


def import_peft(adapter_dir: str | Path, out_dir: str | Path, base: BaseModel, task: str) -> Path:
    """Turn a PEFT PromptTuning adapter into a ptune artifact for `task` on `base` (returns out_dir).

    The adapter's token_dim must equal base.hidden_size and its task type must fit the architecture."""
    tensor, config = read_peft_adapter(adapter_dir)  # (P, d)
    problems = []
    if tensor.shape[1] != base.hidden_size:
        problems.append(f"token_dim={tensor.shape[1]} but base model {base.spec!r} has hidden size {base.hidden_size}")
    wanted = "SEQ_2_SEQ_LM" if base.is_encoder_decoder else "CAUSAL_LM"
    if config["task_type"] != wanted:
        problems.append(f"task_type={config['task_type']} but base model {base.spec!r} needs {wanted}")
    if problems:
        raise ArtifactError(f"cannot import PEFT adapter {adapter_dir}:\n  - " + "\n  - ".join(problems))
    _warn_layout(base.prompt_layout, base.spec, "imported from PEFT")
    provenance = {"imported_from": "peft", "adapter_dir": str(adapter_dir),
                  "base_model_name_or_path": config.get("base_model_name_or_path"),
                  "peft_version": config.get("peft_version")}
    meta = PromptMeta(task=task, base_spec=base.spec, base_fingerprint=base.fingerprint, init="file",
                      train_config=provenance)
    return save_prompt(out_dir, tensor, meta, base_hidden=base.hidden_size)
