"""Nearest-token interpretation of a prompt (Lester et al. §7) on the tiny models."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ptune.cli import app
from ptune.evaluation.interpret import interpret, label_token_ids, write_interpretation
from ptune.model.artifacts import PromptMeta, save_prompt
from ptune.model.soft_prompt import init_prompt

LABELS = ("good", "bad")


def test_a_label_initialised_prompt_has_its_label_words_as_neighbours(tiny_base):
    prompt = init_prompt(tiny_base, 6, "labels", label_words=LABELS, seed=3).weight.detach()  # step 0
    found = interpret(tiny_base, prompt, LABELS, k=3)
    assert found.label_hits[:2] == [True, True]  # rows 0 and 1 are the label embeddings
    for row, word in enumerate(LABELS):  # the tiny BPE splits words: the neighbours are the word's pieces
        assert any(w.strip() and w.strip() in word for w in found.neighbours[row][:2]), found.neighbours[row]
    assert 2 / 6 <= found.label_share <= 1
    assert len(found.neighbours) == 6 and all(len(r) == 3 for r in found.neighbours)


def test_coherence_is_stable_under_a_fixed_seed_and_depends_on_it(tiny_causal):
    prompt = init_prompt(tiny_causal, 8, "vocab", seed=1).weight.detach()
    first, again = interpret(tiny_causal, prompt, LABELS, seed=7), interpret(tiny_causal, prompt, LABELS, seed=7)
    other = interpret(tiny_causal, prompt, LABELS, seed=8)
    assert first == again
    assert first.random_tightness != other.random_tightness and first.prompt_tightness == other.prompt_tightness
    assert first.coherence == round(first.prompt_tightness - first.random_tightness, 6)


def test_vocabulary_rows_are_tighter_than_random_vectors(tiny_causal):
    """A prompt made of vocabulary embeddings sits on the vocabulary: its first neighbour is itself."""
    prompt = init_prompt(tiny_causal, 8, "vocab", seed=1).weight.detach()
    found = interpret(tiny_causal, prompt, k=4)
    assert all(sims[0] > 0.99 for sims in found.similarities)
    assert not any(found.label_hits)  # no label words given


def test_label_token_ids_cover_every_sub_token(tiny_causal):
    ids = label_token_ids(tiny_causal, ["good", "witty film"])
    assert set(tiny_causal.tokenizer(" witty film", add_special_tokens=False)["input_ids"]) <= ids


def test_write_and_cli_produce_markdown_png_and_json(tiny_causal, tiny_causal_dir, tmp_path):
    prompt = init_prompt(tiny_causal, 4, "labels", label_words=LABELS).weight.detach()
    out = write_interpretation(tiny_causal, prompt, LABELS, tmp_path / "direct", task="toy", k=3)
    text = (out / "interpretation.md").read_text()
    assert "label share: **" in text and "![heat map](interpretation.png)" in text and text.count("\n| ") == 5
    assert (out / "interpretation.png").read_bytes()[:4] == b"\x89PNG"
    meta = PromptMeta("toy", str(tiny_causal_dir), tiny_causal.fingerprint, label_words=LABELS)
    prompt_dir = save_prompt(tmp_path / "run" / "prompt", prompt, meta)
    result = CliRunner().invoke(app, ["interpret", str(prompt_dir), "--k", "3", "--base", str(tiny_causal_dir)])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "run" / "interpretation" / "interpretation.json").read_text())
    assert written["label_share"] >= 0.5 and written["k"] == 3 and "label share" in result.output
    assert written["neighbours"] == json.loads((out / "interpretation.json").read_text())["neighbours"]


def test_tokens_with_dollar_signs_are_drawn_as_text_not_mathtext(tmp_path):
    """Regression (strategyqa, 2026-11-29): a neighbour token "$$" made matplotlib's mathtext parser raise
    at draw time, after training had finished, and the whole train stage failed."""
    from ptune.evaluation.interpret import Interpretation, heat_map

    words = [["$$", "$x$", "a_b^c"], ["$", " $$ ", "\\frac"]]
    found = Interpretation(neighbours=words, similarities=[[0.9, 0.5, 0.1], [0.2, -0.3, 0.0]],
                           label_hits=[False, True], coherence=0.1, prompt_tightness=0.3, random_tightness=0.2,
                           k=3, seed=0)
    path = heat_map(found, tmp_path / "map.png", "price_in_$usd$: nearest vocabulary tokens")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_tokens_in_scripts_the_font_lacks_are_escaped_without_warnings(tmp_path):
    """Gemma's vocabulary (2026-11-29): Bengali/Thai/CJK neighbours made matplotlib warn once per missing
    glyph and draw boxes. They are drawn as \\uXXXX; Latin letters with accents are kept."""
    import warnings

    from ptune.evaluation.interpret import Interpretation, drawable, heat_map

    assert drawable("ক film é 日") == "\\u0995 film é \\u65e5"
    found = Interpretation(neighbours=[["ক", "ภ", "」"]], similarities=[[0.9, 0.5, 0.1]], label_hits=[False],
                           coherence=0.1, prompt_tightness=0.3, random_tightness=0.2, k=3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "Glyph ... missing from font(s)" UserWarning fails the test
        path = heat_map(found, tmp_path / "map.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
