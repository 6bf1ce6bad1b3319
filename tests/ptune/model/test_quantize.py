"""Quantized frozen base (`model_quantize: none | int8 | nf4`): config per mode, clear errors, the fingerprint
kept, the prompt's gradient through the quantized linears, and the params.yaml key."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest
import torch

from ptune.config.params import Params, params_from_dict
from ptune.errors import ConfigError, ModelError
from ptune.model import quantize
from ptune.model.base import load_base_model, load_held_model
from ptune.model.quantize import QUANTIZE_MODES, quantization_config, weight_bytes

pytestmark = pytest.mark.usefixtures("keep_threads")
CPU = torch.device("cpu")
QUANTIZED = [m for m in QUANTIZE_MODES if m != "none"]


def test_none_needs_no_config():
    assert quantization_config("none", CPU) is None


def test_int8_and_nf4_configs():
    int8, nf4 = quantization_config("int8", CPU), quantization_config("nf4", CPU, torch.bfloat16)
    assert int8.load_in_8bit and not int8.load_in_4bit
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_compute_dtype == torch.bfloat16


@pytest.mark.parametrize("mode, device, needle", [
    ("int4", CPU, "allowed values are none, int8, nf4"),
    ("int8", torch.device("meta"), "runs on cuda or cpu"),
])
def test_impossible_mode_is_one_line(mode, device, needle):
    with pytest.raises(ModelError, match=needle) as err:
        quantization_config(mode, device)
    assert "\n" not in str(err.value)


def test_missing_bitsandbytes_names_the_pin(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(quantize.importlib.metadata, "version", missing)
    with pytest.raises(ModelError, match=r"pip install bitsandbytes==\d+\.\d+\.\d+$"):
        quantization_config("nf4", CPU)


def test_old_bitsandbytes_refused_on_cpu_only(monkeypatch):
    monkeypatch.setattr(quantize.importlib.metadata, "version", lambda name: "0.45.5")
    with pytest.raises(ModelError, match="on cpu needs bitsandbytes >= 0.50 .*found 0.45.5"):
        quantization_config("int8", CPU)
    assert quantization_config("int8", torch.device("cuda")).load_in_8bit  # CUDA had it all along


def _prompt_grad(base, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits at the last position, gradient of a loss on them w.r.t. a 3-token fp32 soft prompt)."""
    torch.manual_seed(seed)
    prompt = torch.nn.Parameter(torch.randn(1, 3, base.hidden_size) * 0.1)  # (1, P, d), fp32
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    inputs = torch.cat([prompt, base.embed(ids).float()], dim=1)  # (1, P+T, d)
    logits = base.model(inputs_embeds=inputs.to(base.embed(ids).dtype)).logits[:, -1].float()  # (1, V)
    logits.log_softmax(-1)[0, 9].neg().backward()
    return logits.detach(), prompt.grad


@pytest.mark.parametrize("mode", QUANTIZED)
def test_quantized_base_keeps_fingerprint_and_reports_itself(mode, tiny_causal_dir):
    plain = load_base_model(tiny_causal_dir, device="cpu")
    base = load_base_model(tiny_causal_dir, device="cpu", quantize=mode)
    info = base.info()
    assert base.fingerprint == plain.fingerprint  # embeddings are not quantized
    assert info["quantize"] == mode and plain.info()["quantize"] == "none"
    assert ("int8" if mode == "int8" else "uint8") in info["dtype"]
    assert base.model.get_input_embeddings().weight.dtype == torch.float32
    assert weight_bytes(base.model) < weight_bytes(plain.model)


@pytest.mark.parametrize("mode, min_cosine", [("int8", 0.99), ("nf4", 0.9)])
def test_prompt_gradient_flows_through_quantized_linears(mode, min_cosine, tiny_causal_dir):
    _, reference = _prompt_grad(load_base_model(tiny_causal_dir, device="cpu"))
    _, grad = _prompt_grad(load_base_model(tiny_causal_dir, device="cpu", quantize=mode))
    assert grad is not None and grad.dtype == torch.float32 and grad.abs().sum() > 0
    assert torch.nn.functional.cosine_similarity(grad.flatten(), reference.flatten(), dim=0) > min_cosine


def test_a_few_prompt_steps_lower_the_loss_on_nf4(tiny_causal_dir):
    base = load_base_model(tiny_causal_dir, device="cpu", quantize="nf4")
    torch.manual_seed(0)
    prompt = torch.nn.Parameter(torch.randn(1, 3, base.hidden_size) * 0.1)
    opt = torch.optim.Adam([prompt], lr=0.05)
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    losses = []
    for _ in range(8):
        logits = base.model(inputs_embeds=torch.cat([prompt, base.embed(ids)], dim=1)).logits[:, -1]  # (1, V)
        loss = logits.log_softmax(-1)[0, 9].neg()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_held_bf16_keeps_quantized_weights(tiny_causal_dir):
    base = load_held_model(str(tiny_causal_dir), "bf16", device="cpu", quantize="int8")
    dtypes = {p.dtype for p in base.model.parameters()}
    assert dtypes == {torch.int8, torch.bfloat16}


def test_params_key_validated():
    assert Params().model_quantize == "none"
    assert params_from_dict({"model_quantize": "nf4"}).model_quantize == "nf4"
    with pytest.raises(ConfigError, match=r"model_quantize = 'int4': allowed values are none, int8, nf4"):
        params_from_dict({"model_quantize": "int4"})


def _mapped(path) -> bool:
    with open("/proc/self/maps") as maps:
        return any(str(path) in line for line in maps)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("kwargs", [{"dtype": "bfloat16"}, {"quantize": "int8"}])
def test_held_or_quantized_load_lets_the_checkpoint_file_go(kwargs, tiny_causal_dir, tmp_path):
    """The load peak fix: parameters get their own memory, so the fp32 file's mapping (and its RSS) goes."""
    tiny_causal_dir = Path(shutil.copytree(tiny_causal_dir, tmp_path / "model"))  # no other test's model maps it
    plain = load_base_model(tiny_causal_dir, device="cpu")
    assert _mapped(tiny_causal_dir / "model.safetensors")  # a plain fp32 load keeps viewing the file (page cache)
    base = load_base_model(tiny_causal_dir, device="cpu", **kwargs)
    del plain
    __import__("gc").collect()
    assert not _mapped(tiny_causal_dir / "model.safetensors")
    assert base.fingerprint == load_base_model(tiny_causal_dir, device="cpu").fingerprint


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("mode", QUANTIZED)
def test_cuda_quantized_base_trains_the_prompt(mode, tiny_causal_dir):
    """The GPU check's path: bitsandbytes on CUDA, the prompt fp32 on the embeddings' device, gradient flowing."""
    base = load_base_model(tiny_causal_dir, device="cuda", quantize=mode)
    assert base.device.type == "cuda" and base.info()["quantize"] == mode
    assert base.fingerprint == load_base_model(tiny_causal_dir, device="cpu").fingerprint
    torch.manual_seed(0)
    prompt = torch.nn.Parameter(torch.randn(1, 3, base.hidden_size, device=base.device) * 0.1)  # (1, P, d)
    ids = torch.tensor([[1, 5, 6, 7, 8]], device=base.device)
    logits = base.model(inputs_embeds=torch.cat([prompt, base.embed(ids)], dim=1)).logits[:, -1]  # (1, V)
    logits.float().log_softmax(-1)[0, 9].neg().backward()
    assert prompt.grad.dtype == torch.float32 and torch.isfinite(prompt.grad).all() and prompt.grad.abs().sum() > 0


def test_model_info_options(tiny_causal_dir):
    from typer.testing import CliRunner

    from ptune.cli import app

    out = CliRunner().invoke(app, ["model-info", str(tiny_causal_dir), "--device", "cpu", "--quantize", "nf4",
                                   "--device-map", '{"": "cpu"}'])
    assert out.exit_code == 0, out.output
    assert "quantize: nf4" in out.output and "weights_mb: " in out.output
    bad = CliRunner().invoke(app, ["model-info", str(tiny_causal_dir), "--device", "cpu", "--quantize", "int4"])
    assert bad.exit_code != 0


def test_report_and_predict_score_on_the_base_as_training_held_it(tmp_path, tiny_causal_dir, monkeypatch):
    """`ptune eval/report/predict` load the prompt onto the run's base held as params.yaml says: a prompt trained on
    an int8 base is scored on that int8 base, not on an fp32 copy."""
    import yaml

    from ptune.config import project_params
    from ptune.model.quantize import quantized_mode
    from ptune.pipeline import stages
    from tests.support import build_project, run_cli, use_project

    root = use_project(build_project(tmp_path / "project", tiny_causal_dir, n_rows=40), monkeypatch)
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump({**params, "model_quantize": "int8"}, sort_keys=False))
    for step in ("fetch", "prepare"):
        run_cli(root, step, "toy")
    run_cli(root, "train", "toy", "--steps", "2", "--no-track")
    run = stages.TaskRun.build("toy", project_params(root / "params.yaml", must_exist=True), source="test")
    _, base = stages.trained_from_dir(run)
    assert quantized_mode(base.model) == "int8"
