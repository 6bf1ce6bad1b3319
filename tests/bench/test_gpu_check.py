"""bench/gpu_check.sh in its CPU mode (`--cpu`): every part runs on tiny shapes (2 gloo ranks for DDP, int8 and nf4
through bitsandbytes' CPU backend) and the combined JSON holds each part's outcome and sane numbers. A session is
lent a GPU rarely; the script must not meet its first bug there."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
PARTS = ("tests", "train_step", "ddp", "big_model", "serve")
GPU_MINUTES = 8  # the limit on one GPU


@pytest.fixture(scope="module")
def check(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "PTUNE_THREADS": "1"}
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return json.loads((out / "gpu_check.json").read_text()), out


def test_every_part_runs_in_cpu_mode_and_is_recorded(check):
    doc, out = check
    assert doc["mode"] == "cpu" and doc["devices"] == ["cpu"] and doc["date"]
    assert {"torch", "transformers", "peft", "bitsandbytes"} <= set(doc["versions"])
    assert list(doc["parts"]) == list(PARTS)
    assert doc["parts"]["tests"]["status"].startswith("skipped: --cpu")
    for name in PARTS[1:]:
        part = doc["parts"][name]
        assert part["status"] == "ok" and 0 <= part["seconds"] <= part["budget_s"], (name, part)
        assert part["result"] == json.loads((out / f"gpu_{name}.json").read_text())


def test_the_numbers_are_sane(check):
    doc, _ = check
    train, ddp, serve = (doc["parts"][n]["result"] for n in ("train_step", "ddp", "serve"))
    for value in (train["bf16_speedup"], train["eval_bf16_speedup"], train["ptune_over_peft_bf16"],
                  serve["mixed_over_switching"], serve["ptune_switching_over_mixed"]):
        assert math.isfinite(value) and value > 0
    assert ddp["nproc"] == 2 and ddp["backend"] == "gloo" and ddp["scaling_measured"]
    assert ddp["ranks"]["world"] == 2 and ddp["ranks"]["rows_per_rank"] * 2 == ddp["single"]["rows_per_rank"]
    assert 0 < ddp["scaling_efficiency"] <= 1.5
    assert serve["max_score_diff"] < 1e-3  # the mixed batch and PEFT score the same rows alike
    assert doc["headline"]["ddp"]["scaling_efficiency"] == ddp["scaling_efficiency"]


def test_big_model_records_each_variant_or_why_not(check):
    big = check[0]["parts"]["big_model"]["result"]
    assert list(big["variants"]) == ["fp32", "int8", "nf4"]
    plain = big["variants"]["fp32"]
    assert plain["median_s"]["ptune"] > 0 and plain["ptune_over_peft"] > 0 and plain["dtypes"] == ["float32"]
    for name in ("int8", "nf4"):
        variant = big["variants"][name]
        if "skipped" in variant:  # no bitsandbytes, or a ptune without quantize=
            assert variant["skipped"].startswith("skipped: ") and big[f"{name}_over_fp32_step"] is None
        else:
            assert "error" not in variant, variant
            assert variant["param_mib"] < plain["param_mib"] and big[f"{name}_over_fp32_step"] > 0


def test_what_comes_back_fits_the_device_tool(check):
    _, out = check
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files), files
    assert "gpu_check.log" in files


def test_the_budgets_fit_eight_minutes_on_one_gpu():
    budgets = [int(b) for b in re.findall(r"^\s*part \w+ (\d+) ", SCRIPT.read_text(), re.M)]
    assert len(budgets) == len(PARTS)
    assert sum(budgets) + 5 * len(budgets) + 30 <= GPU_MINUTES * 60  # kill grace, wheel install and summary
