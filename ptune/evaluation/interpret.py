"""What a soft prompt "says": the vocabulary tokens nearest to each virtual token (Lester et al. 2021, §7).

For every virtual token (a row of the (P, d) prompt) the k input-embedding rows with the highest cosine
similarity are its neighbours. Two numbers summarise them:
- coherence: how tightly a token's k neighbours cluster (mean pairwise cosine of their embeddings),
  averaged over the prompt, minus the same for random vectors with the prompt rows' norms (seeded).
  Above 0: the prompt's neighbourhoods are tighter semantic clusters than chance ones (the paper's finding).
- label share: the fraction of virtual tokens whose neighbours include a label word's token.
Written as interpretation.md + interpretation.png (heat map: virtual token x neighbour rank, cosine as
colour, token text in the cells) + interpretation.json, beside the prompt artifact.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ptune.fileio import atomic_path, atomic_write_text
from ptune.model.base import BaseModel
from ptune.model.batching import encode_target

INTERPRETATION_DIR = "interpretation"  # beside the prompt dir: <root>/interpretation/
RANDOM_DRAWS = 8  # random prompts averaged for the chance level of coherence


@dataclass(frozen=True)
class Interpretation:
    """Nearest vocabulary tokens of a prompt and the scores built on them."""

    neighbours: list[list[str]]  # (P, k) token text, nearest first
    similarities: list[list[float]]  # (P, k) cosine similarity of each neighbour
    label_hits: list[bool]  # per virtual token: a label word's token is among its neighbours
    coherence: float  # prompt tightness minus random tightness
    prompt_tightness: float  # mean pairwise cosine among each token's neighbours, averaged over tokens
    random_tightness: float  # the same for random vectors of the same norms (RANDOM_DRAWS draws, seeded)
    k: int
    seed: int

    @property
    def label_share(self) -> float:
        return sum(self.label_hits) / max(1, len(self.label_hits))


def _vocab(base: BaseModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (V',), unit-norm embeddings (V', d)) of the real, non-special tokens."""
    weight = base.model.get_input_embeddings().weight.detach().to("cpu", torch.float32)  # (V, d)
    special = set(base.tokenizer.all_special_ids)
    ids = torch.tensor([i for i in range(min(weight.shape[0], len(base.tokenizer))) if i not in special])
    return ids, torch.nn.functional.normalize(weight[ids], dim=-1)  # (V', d)


def _nearest(unit_vocab: torch.Tensor, vectors: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosines (P, k), row indices into unit_vocab (P, k)) of each vector's k nearest vocabulary rows."""
    sims = torch.nn.functional.normalize(vectors.float(), dim=-1) @ unit_vocab.T  # (P, V')
    return sims.topk(min(k, unit_vocab.shape[0]), dim=-1)


def _tightness(unit_vocab: torch.Tensor, rows: torch.Tensor) -> float:
    """Mean pairwise cosine among each token's neighbours (rows (P, k) indices), averaged over tokens."""
    k = rows.shape[1]
    if k < 2:
        return 0.0
    emb = unit_vocab[rows]  # (P, k, d)
    gram = emb @ emb.transpose(1, 2)  # (P, k, k)
    off_diagonal = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)  # (P,)
    return float((off_diagonal / (k * (k - 1))).mean())


def label_token_ids(base: BaseModel, label_words: Sequence[str]) -> set[int]:
    """Every token id of every label word, tokenised as in training (and bare, without a leading space)."""
    ids: set[int] = set()
    for word in label_words:
        ids.update(encode_target(base.tokenizer, word, base.is_encoder_decoder, add_eos=False))
        ids.update(base.tokenizer(word, add_special_tokens=False)["input_ids"])
    return ids


def interpret(base: BaseModel, prompt: torch.Tensor, label_words: Sequence[str] = (), *, k: int = 5,
              seed: int = 0) -> Interpretation:
    """Neighbours and scores of `prompt` (P, d) on `base`'s input embeddings; deterministic for `seed`."""
    ids, unit = _vocab(base)
    prompt = prompt.detach().to("cpu", torch.float32)  # (P, d)
    sims, rows = _nearest(unit, prompt, k)
    gen = torch.Generator().manual_seed(int(seed))
    norms = prompt.norm(dim=-1, keepdim=True)  # (P, 1)
    chance = []
    for _ in range(RANDOM_DRAWS):
        noise = torch.randn(prompt.shape, generator=gen)
        chance.append(_tightness(unit, _nearest(unit, noise / noise.norm(dim=-1, keepdim=True) * norms, k)[1]))
    tight, random_tight = _tightness(unit, rows), sum(chance) / len(chance)
    token_ids = ids[rows]  # (P, k) vocabulary ids
    labels = label_token_ids(base, label_words)
    words = [[base.tokenizer.decode([int(t)]) for t in row] for row in token_ids.tolist()]
    return Interpretation(words, [[round(float(s), 4) for s in row] for row in sims],
                          [bool(labels & set(row)) for row in token_ids.tolist()], round(tight - random_tight, 6),
                          round(tight, 6), round(random_tight, 6), int(sims.shape[1]), int(seed))


def markdown(found: Interpretation, task: str = "", heat_map: str = "interpretation.png") -> str:
    """interpretation.md: the scores, then one table row per virtual token."""
    head = f"# Nearest vocabulary tokens of the {task} prompt" if task else "# Nearest vocabulary tokens"
    lines = [head, "",
             f"- coherence: **{found.coherence:+.4f}** (neighbour tightness {found.prompt_tightness:.4f} vs "
             f"{found.random_tightness:.4f} for random vectors of the same norms, seed {found.seed})",
             f"- label share: **{found.label_share:.2f}** ({sum(found.label_hits)} of {len(found.label_hits)} "
             "virtual tokens have a label word's token among their neighbours)", "",
             f"![heat map]({heat_map})", "",
             "| token | " + " | ".join(f"#{i + 1}" for i in range(found.k)) + " | label |",
             "|---|" + "---|" * found.k + "---|"]
    for i, (words, sims, hit) in enumerate(zip(found.neighbours, found.similarities, found.label_hits, strict=True)):
        cells = [f"`{_cell(w)}` {s:.2f}" for w, s in zip(words, sims, strict=True)]
        lines.append(f"| {i} | " + " | ".join(cells) + f" | {'yes' if hit else ''} |")
    return "\n".join(lines) + "\n"


def _cell(word: str) -> str:
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in word)  # control bytes as \x1a
    return shown.replace("|", "\\|").replace("`", "'") or " "


def drawable(text: str) -> str:
    """`text` with each character the plot font has no glyph for written as \\uXXXX (multilingual vocabularies
    such as Gemma's hold Bengali, Thai, CJK tokens: matplotlib would draw boxes and warn once per glyph).
    The markdown table keeps the real text."""
    font = _plot_font()
    return "".join(c if c.isascii() or font.get_char_index(ord(c)) else f"\\u{ord(c):04x}" for c in text)


@functools.cache
def _plot_font():
    from matplotlib import font_manager
    return font_manager.get_font(font_manager.findfont(font_manager.FontProperties()))


def heat_map(found: Interpretation, path: Path, title: str = "") -> Path:
    """PNG: virtual tokens (rows) x neighbour rank (columns), cosine as colour, token text in each cell."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False}):  # a token such as "$$" is text, not mathtext
        n = len(found.neighbours)
        fig, ax = plt.subplots(figsize=(1.4 + 1.3 * found.k, 0.9 + 0.32 * n))
        image = ax.imshow(found.similarities, cmap="viridis", aspect="auto", vmin=-1, vmax=1)
        for i, (words, sims) in enumerate(zip(found.neighbours, found.similarities, strict=True)):
            for j, (word, sim) in enumerate(zip(words, sims, strict=True)):
                ax.text(j, i, drawable(repr(word.strip() or word)[1:-1])[:12], ha="center", va="center", fontsize=7,
                        color="black" if sim > 0.3 else "white")
        ax.set_xticks(range(found.k), [f"#{j + 1}" for j in range(found.k)])
        ax.set_yticks(range(n), [f"{i}{' *' if hit else ''}" for i, hit in enumerate(found.label_hits)])
        ax.set_xlabel("neighbour rank (cosine similarity)")
        ax.set_ylabel("virtual token (* = label word among neighbours)")
        ax.set_title(title or "nearest vocabulary tokens", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.04)
        fig.tight_layout()
        fig.savefig(path, dpi=100, format="png")
        plt.close(fig)
        return path


def write_interpretation(base: BaseModel, prompt: torch.Tensor, label_words: Sequence[str], out_dir: str | Path,
                         *, task: str = "", k: int = 5, seed: int = 0) -> Path:
    """Write interpretation.{md,png,json} into `out_dir` (created); returns `out_dir`."""
    found = interpret(base, prompt, label_words, k=k, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "interpretation.png") as tmp:
        heat_map(found, tmp, f"{task}: nearest vocabulary tokens" if task else "")
    data = {**asdict(found), "label_share": found.label_share, "task": task}
    atomic_write_text(out / "interpretation.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "interpretation.md", markdown(found, task))
    return out


def report_note(run_root: str | Path) -> dict[str, str]:
    """The report's link to the interpretation written beside the prompt ({} when there is none)."""
    if not (Path(run_root) / INTERPRETATION_DIR / "interpretation.md").is_file():
        return {}
    return {"interpretation": f"[nearest vocabulary tokens of the prompt](../{INTERPRETATION_DIR}/interpretation.md)"}
