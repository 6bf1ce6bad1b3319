"""The MLflow pyfunc behind every `ptune-<task>` version, logged from code (no pickled class).

MLflow copies this file into the model and runs it on load; `set_model` at the bottom names the model.
Its one artifact, "prompt", is a ptune prompt directory with the task spec it was registered with
(task_spec.json). `load_context` finds the model's registry version and checks the prompt, code and task
spec against the hashes recorded there (`ptune.registry.provenance`: never the
MLmodel's own `model_config`, which lies in the same store), then loads the prompt with the base model that
version's tags name (`ptune.registry.loading`), refusing an unregistered model (unless
PTUNE_ALLOW_UNREGISTERED=1), a prompt made for a different base model (fingerprint) or a damaged one
(checksum). This file itself runs before any check: see docs/mlflow.md. `predict` scores with `ptune.evaluation.scoring.evaluate`
(rank classification for classification tasks, generation otherwise), `params={"batch_size": n}` honoured,
in the project's `evaluate.precision` as `ptune report` scored it (bf16 under `auto` on a CPU or GPU with
bf16 units; on CPU the frozen weights are then held in bf16 from load on).
The ptune package travels with the model (`code_paths`, see pyfunc_logging.py); its third-party
requirements are pinned in the model's requirements.txt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from ptune.data.spec import TaskSpec, format_fields

SOURCE_COLUMNS = ("source", "text")  # pre-formatted source text, used as-is when the task's columns are absent


class PtunePromptModel(PythonModel):
    """DataFrame of task input columns (or a "source"/"text" column) -> list of labels or generated texts."""

    def load_context(self, context: Any) -> None:
        """Load and check the prompt artifact, its base model and its task spec (the one stored with the
        registry version, checked against its tag: never the local params.yaml)."""
        from ptune.config import project_params
        from ptune.model.ensemble_artifact import load_ensemble
        from ptune.model.precision import autocast_dtype, hold_for_inference
        from ptune.registry.loading import load_prompt_with_base
        from ptune.registry.provenance import checked_model, checked_spec

        prompt_dir = Path(context.artifacts["prompt"])  # <model dir>/artifacts/<prompt dir name>
        checked = checked_model(prompt_dir.parents[1], prompt_dir)  # against the registry, not model_config
        loaded = load_prompt_with_base(prompt_dir, base_spec=checked.base)
        self.base, self.prompt, self.meta = loaded.base, loaded.prompt, loaded.meta
        self.ensemble = load_ensemble(context.artifacts["prompt"], loaded.base.fingerprint)  # None: one prompt
        self.spec = checked_spec(checked, prompt_dir, loaded.meta.task)
        params = project_params()
        self.precision = autocast_dtype(params.evaluate.precision, self.base.device, self.base.n_params,
                                        "evaluate.precision")
        hold_for_inference(self.base.model, self.base.device, self.precision)  # no per-call weight casts

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        """One prediction per row: a label word (classification) or generated text (generation)."""
        from ptune.data.splits import Example
        from ptune.evaluation.scoring import evaluate

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        sources = input_sources(self.spec, frame)
        target = self.spec.label_words[0] if self.spec.label_words else ""  # unused: only predictions are returned
        examples = [Example(id=str(i), source=source, target=target, fields={}) for i, source in enumerate(sources)]
        if not examples:
            return []
        from ptune.model.precision import inference_precision

        batch_size = int((params or {}).get("batch_size") or 16)  # the signature's params schema lets it through
        with inference_precision(self.base.model, self.base.device, getattr(self, "precision", None)):
            if getattr(self, "ensemble", None) is not None:  # K prompts scored together (ptune.evaluation.ensemble)
                from ptune.evaluation.ensemble import evaluate_ensemble

                return evaluate_ensemble(self.base, self.spec, examples, self.ensemble.prompts, method=self.ensemble.method,
                                         batch_size=batch_size, split="predict").ensemble.predictions
            result = evaluate(self.base, self.spec, examples, self.prompt, batch_size=batch_size, split="predict",
                              progress=False)
        return list(result.predictions)


def input_sources(spec: TaskSpec, frame: pd.DataFrame) -> list[str]:
    """Source texts for the rows of `frame`: through the task's formatter when its input columns are
    present, else the "source" (or "text") column as already-formatted source text. ValueError naming every
    row whose input is empty (or missing): the model has nothing to score."""
    sources = _sources(spec, frame)
    columns = [c for c in dict.fromkeys((*spec.columns, *SOURCE_COLUMNS)) if c in frame.columns]
    rows = frame[columns].to_dict(orient="records") if columns else [{} for _ in sources]
    empty = [str(i) for i, (source, row) in enumerate(zip(sources, rows, strict=True))
             if not source.strip() or all(_blank(v) for v in row.values())]
    if empty:
        raise ValueError(f"task {spec.name!r}: row(s) {', '.join(empty[:20])}{' ...' if len(empty) > 20 else ''} "
                         f"have an empty input (columns {columns}); expected non-empty text")
    return sources


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()


def _sources(spec: TaskSpec, frame: pd.DataFrame) -> list[str]:
    rows = frame.to_dict(orient="records")
    present = [c for c in spec.columns if c in frame.columns]
    if present and not any(c in frame.columns and c not in spec.columns for c in SOURCE_COLUMNS):
        try:
            return [format_fields(spec, {c: v for c, v in row.items() if c in spec.input_columns}) for row in rows]
        except Exception as exc:  # the formatter is task code (user tasks too): report what it needs
            if not any(c in frame.columns for c in SOURCE_COLUMNS):
                raise ValueError(f"task {spec.name!r}: cannot format input rows with columns {list(frame.columns)} "
                                 f"(expected {list(spec.columns)} or a 'source'/'text' column): {exc}") from exc
    for column in SOURCE_COLUMNS:
        if column in frame.columns:
            return [str(value) for value in frame[column]]
    raise ValueError(f"task {spec.name!r}: input needs the columns {list(spec.columns)} or a 'source'/'text' column; "
                     f"got {list(frame.columns)}")


mlflow.models.set_model(PtunePromptModel())
