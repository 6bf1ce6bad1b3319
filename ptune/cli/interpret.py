"""`ptune interpret PROMPT_DIR`: the nearest vocabulary tokens of a trained prompt (Lester et al. 2021, §7)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def interpret_cmd(
    prompt_dir: Annotated[Path, typer.Argument(help="A ptune prompt artifact directory.")],
    k: Annotated[int, typer.Option("--k", min=1, help="Nearest vocabulary tokens per virtual token.")] = 5,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the random vectors for the coherence score.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="Output dir (default: PROMPT_DIR/../interpretation).")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Base model to load (default: params.yaml model); prompt.json must name it.")] = None,
) -> None:
    """Write interpretation.md/.png/.json: per virtual token its k nearest tokens, coherence, label share."""
    import json

    from ptune.evaluation.interpret import INTERPRETATION_DIR, write_interpretation
    from ptune.registry.loading import load_prompt_with_base

    loaded = load_prompt_with_base(prompt_dir, base_spec=base)
    target = out or Path(prompt_dir).resolve().parent / INTERPRETATION_DIR
    written = write_interpretation(loaded.base, loaded.prompt, loaded.meta.label_words, target,
                                   task=loaded.meta.task, k=k, seed=seed)
    found = json.loads((written / "interpretation.json").read_text(encoding="utf-8"))
    typer.echo(f"wrote {written}/interpretation.md (coherence {found['coherence']:+.4f}, "
               f"label share {found['label_share']:.2f})")
