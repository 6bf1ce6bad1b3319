"""How a registered version is logged: the pyfunc from code, its signature and input example, the frozen
ptune code (`code_paths`), pinned requirements and the integrity hashes in its `model_config`.

Why `code_paths` (the whole ptune package, ~0.5 MB) rather than a pinned `ptune==X` requirement: ptune
is not on PyPI, so a requirement could only be met from a wheel that every serving machine would have to
find; the package copied into the model needs nothing. `mlflow.pyfunc.load_model` puts the copy first on
`sys.path`, so a fresh process (`mlflow models serve`, a consumer) runs the code the version was
registered with. In a process that has already imported ptune, Python keeps the imported one.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from ptune.data.spec import TaskSpec
from ptune.model.artifacts import load_prompt

PYFUNC_MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")
PTUNE_PACKAGE = Path(__file__).resolve().parents[1]  # the ptune package directory, logged as code_paths
SOURCE_COLUMN = "source"  # pre-formatted source text (the pyfunc also takes the task's own columns)
DEFAULT_BATCH_SIZE = 16
# While `log_pyfunc` runs in this thread: the base spec of the prompt being logged (MLflow loads the model once to
# check its input example, before the registry has a version to check it against; see ptune.registry.provenance)
LOGGING_BASE: ContextVar[str | None] = ContextVar("ptune_logging_base", default=None)
SERVING_PACKAGES = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "gguf", "sentencepiece",
                    "pandas", "pyyaml", "rouge-score", "tqdm")


def signature(spec: TaskSpec) -> ModelSignature:
    """Inputs: the task's input columns (not its target) and "source", all optional strings; output: one string
    per row; params:
    `batch_size` (int, default 16), so `predict(df, params={"batch_size": 4})` reaches the model."""
    columns = list(dict.fromkeys([*spec.input_columns, SOURCE_COLUMN]))
    return ModelSignature(inputs=Schema([ColSpec("string", c, required=False) for c in columns]),
                          outputs=Schema([ColSpec("string")]),
                          params=ParamSchema([ParamSpec("batch_size", "long", DEFAULT_BATCH_SIZE)]))


PLACEHOLDER_INPUT = "an example input"  # when no data row is at hand: never empty (an empty input is refused)


def input_example(spec: TaskSpec, example: Mapping[str, str] | None) -> pd.DataFrame:
    """One input row: the task's first column when `example` (a raw row) has it, else its source text, else
    a placeholder text in the task's first column (MLflow runs the pyfunc on it when the model is logged)."""
    example = example or {}
    first = spec.columns[0] if spec.columns else SOURCE_COLUMN
    if isinstance(example.get(first), str) and example[first].strip():
        return pd.DataFrame({first: [example[first]]})
    if str(example.get(SOURCE_COLUMN, "")).strip():
        return pd.DataFrame({SOURCE_COLUMN: [str(example[SOURCE_COLUMN])]})
    return pd.DataFrame({first: [PLACEHOLDER_INPUT]})


def log_pyfunc(run_id: str, prompt_dir: str | Path, spec: TaskSpec, example: Mapping[str, str] | None,
               hashes: Mapping[str, str]) -> str:
    """Log the pyfunc in `run_id` (artifact: the prompt dir) and return its LoggedModel id."""
    token = LOGGING_BASE.set(load_prompt(prompt_dir)[1].base_spec)  # the base the version's tag will name
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(PYFUNC_MODEL_FILE), artifacts={"prompt": str(prompt_dir)},
                code_paths=[str(PTUNE_PACKAGE)], pip_requirements=pip_requirements(), signature=signature(spec),
                input_example=input_example(spec, example), model_config=dict(hashes))
    finally:
        LOGGING_BASE.reset(token)
    return info.model_id


def pip_requirements() -> list[str]:
    """The third-party packages the pyfunc's code imports, pinned to the installed versions (ptune itself
    travels as code). Prefect, DVC and Great Expectations are not needed to serve a prompt."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for package in SERVING_PACKAGES:
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pinned
