"""Every pinned file behind the built-in tasks and models, and whether each can be had now (`ptune sources`).

A row per pinned file: who uses it, whether a default (params.yaml's `model` and `run_tasks`) needs it,
where it comes from, whether the index lists it now, whether the packages cache holds a verified copy,
size and licence. A default's file is available when it is cached and verified, or listed on the index.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptune.config import Params
from ptune.data.catalog import builtin_tasks
from ptune.model.gguf import BUILTIN_MODELS
from ptune.packages import PinnedFile, cache_state, index_state, index_url


@dataclass(frozen=True)
class SourceRow:
    pin: PinnedFile
    used_by: tuple[str, ...]   # "task:<name>" and "model:<name>"
    default: bool              # needed by params.yaml's model or run_tasks
    listed: str                # yes | NO | unreachable | not asked
    cached: str                # yes | no | corrupt

    @property
    def available(self) -> bool:
        return self.cached == "yes" or (self.cached == "no" and self.listed == "yes")


def pinned_uses() -> dict[PinnedFile, list[str]]:
    """Each pinned file -> the built-in tasks and models that read it, in catalog order."""
    uses: dict[PinnedFile, list[str]] = {}
    for name, model in BUILTIN_MODELS.items():
        for pin in model.pins:
            uses.setdefault(pin, []).append(f"model:{name}")
    for name, spec in builtin_tasks().items():
        for pin in getattr(spec.source, "pins", ()):
            uses.setdefault(pin, []).append(f"task:{name}")
    return uses


def source_rows(params: Params, *, ask_index: bool = True) -> list[SourceRow]:
    defaults = {f"model:{params.model}", *(f"task:{t}" for t in params.run_tasks)}
    rows = []
    for pin, users in pinned_uses().items():
        rows.append(SourceRow(pin, tuple(users), bool(defaults & set(users)),
                              index_state(pin) if ask_index else "not asked", cache_state(pin)))
    return rows


def render(rows: list[SourceRow]) -> str:
    """A plain-text table, widest columns last; the footer says where `listed` was asked."""
    head = ("file", "used by", "default", "listed now", "cached", "MB", "licence")
    body = [(f"{r.pin.package}=={r.pin.version} {r.pin.filename}", ", ".join(r.used_by), "yes" if r.default else "",
             r.listed, r.cached, f"{(r.pin.size or 0) / 1e6:.1f}", r.pin.licence) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*head), line.format(*("-" * w for w in widths)), *(line.format(*b) for b in body)]
    return "\n".join([*(row.rstrip() for row in out), f"index: {index_url()}/"])
