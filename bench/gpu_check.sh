#!/usr/bin/env bash
# The prepared GPU check (docs/training.md "GPU"): run it once whenever a session is lent a GPU machine, keep
# $OUT/gpu_check.json, put the numbers in bench/README.md. At most 8 minutes on one GPU; never needed by `make test`.
#
# Parts, each under its own `timeout` (budget in seconds; a part that fails or runs past its budget is recorded as
# such in the JSON and the next part runs):
#   tests       80  the CUDA tests (tests/ptune/model/test_cuda.py)
#   train_step  60  bench_gpu.py: train step and evaluation forward, fp32 vs bf16, ptune vs PEFT (SmolLM2's shape)
#   ddp         80  bench_ddp.py: train-step throughput, 1 process vs every visible GPU (NCCL), scaling efficiency
#   big_model  130  bench_big_model.py: a 1.1B Llama (TinyLlama's shape) in bf16 and in nf4: step, memory, vs PEFT
#   serve       60  bench_serve.py --device cuda: one mixed-task batch vs PEFT's set_adapter per task (goal >= 2x)
# 410 s of budgets + 5 s kill grace each + about 20 s of wheel install and summary: under 7.5 minutes at worst.
# Models have random weights in the real shapes (nothing downloads there); speed and memory carry over, scores do not.
#
# Prepare here, once (the GPU machine has no network; its python3 has torch, peft, safetensors and an older
# transformers and huggingface_hub): `bash bench/gpu_check.sh --prepare` puts ptune's transformers, huggingface_hub
# and peft with the dependencies that machine lacks, and bitsandbytes cut to its CUDA 12.4+ and 13 libraries (25 of 43 MB),
# as wheels in .whl/ (about 45 MB, under the device tool's 64 MiB; ignored by git). Then the device tool:
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
# Writes 6 files to $OUT (bench/results/ when $OUT is unset, a temp dir with --cpu; at most 8 come back):
# gpu_check.json (every part's outcome and numbers, device, versions, date), gpu_check.log, gpu_<part>.json.
# `bash bench/gpu_check.sh --cpu` runs every part in its CPU mode (tiny shapes, 2 gloo ranks; tests the script:
# tests/bench/test_gpu_check.py); PYTHON picks the interpreter (default python3, .venv/bin/python with --cpu).
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-gpu}
case $mode in gpu | --cpu | --prepare) ;; *) echo "usage: bash bench/gpu_check.sh [--cpu | --prepare]" >&2; exit 2 ;; esac

if [[ $mode == --prepare ]]; then
  set -e
  py=.venv/bin/python
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  rm -rf .whl && mkdir -p .whl
  pins=$($py -c 'import importlib.metadata as m
print(" ".join(f"{p}=={m.version(p)}" for p in ("transformers", "huggingface_hub", "peft", "httpx2", "httpcore2",
      "truststore", "kernels", "tomlkit", "regex")))')
  platforms=$(printf -- '--platform %s ' manylinux_2_28_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 any)
  # shellcheck disable=SC2086
  $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
    -d .whl $pins bitsandbytes==0.50.2
  # keep the CPU, CUDA 12.4-12.8 and 13.x libraries (whichever CUDA the GPU machine's torch was built for): 43 -> 25 MB
  zip -q -d .whl/bitsandbytes-*.whl 'bitsandbytes/libbitsandbytes_cuda11*' 'bitsandbytes/libbitsandbytes_cuda121*' \
    'bitsandbytes/libbitsandbytes_rocm*' 'bitsandbytes/libbitsandbytes_xpu*'
  ls -la .whl && du -sh .whl
  exit 0
fi

if [[ $mode == --cpu ]]; then out=${OUT:-$(mktemp -d /tmp/gpu-check-cpu.XXXX)}; else out=${OUT:-bench/results}; fi
mkdir -p "$out" && echo "writing to $out"
parts=$(mktemp)
log=$out/gpu_check.log
: > "$log"
if [[ $mode == --cpu ]]; then
  py=${PYTHON:-.venv/bin/python}
  cpu=(--cpu)
else
  py=${PYTHON:-python3}
  cpu=()
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl 2>&1 | tee -a "$log"
    export PYTHONPATH=/tmp/site
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  PTUNE_HOME=${PTUNE_HOME:-/tmp/ptune-home} DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false
status=0

part() {  # name budget_s command...: run it under `timeout`, log it, record (name, exit code, seconds, budget)
  local name=$1 budget=$2 start=$SECONDS code
  shift 2
  [[ $mode == --cpu ]] && budget=$((budget * 3))  # a 2-core machine shared with other work: room, not a budget
  echo "== $name (budget $budget s): $*" | tee -a "$log"
  timeout -k 5 "$budget" "$@" 2>&1 | tee -a "$log"
  code=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\n' "$name" "$code" "$((SECONDS - start))" "$budget" >> "$parts"
  [[ $code == 0 ]] || status=1
}

pick() { if [[ $mode == --cpu ]]; then echo "$1"; else echo "$2"; fi; }  # the CPU mode's value, or the GPU's

if [[ $mode == --cpu ]]; then
  printf 'tests\tskipped: --cpu (the CUDA tests skip without a GPU)\t0\t80\n' >> "$parts"
else
  part tests 80 "$py" -m pytest -q -m cuda tests/ptune/model/test_cuda.py -p no:cacheprovider
fi
part train_step 60 "$py" bench/bench_gpu.py ${cpu[@]+"${cpu[@]}"} --reps "$(pick 1 20)" --out "$out/gpu_train_step.json"
part ddp 80 "$py" bench/bench_ddp.py ${cpu[@]+"${cpu[@]}"} --steps "$(pick 3 20)" --out "$out/gpu_ddp.json"
part big_model 130 "$py" bench/bench_big_model.py ${cpu[@]+"${cpu[@]}"} --reps "$(pick 1 10)" --out "$out/gpu_big_model.json"
part serve 60 "$py" bench/bench_serve.py --device "$(pick cpu cuda)" --reps "$(pick 1 10)" --out "$out/gpu_serve.json"

# The summary: one JSON with the machine, the versions and every part's outcome and numbers.
"$py" - "$out" "$parts" "$mode" "$SECONDS" <<'EOF' 2>&1 | tee -a "$log"
import importlib.metadata as meta, json, re, sys, time
from pathlib import Path

out, parts, mode, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
import torch

def version(name):
    try:
        return meta.version(name)
    except meta.PackageNotFoundError:
        return None

def outcome(code, budget):
    if not code.lstrip("-").isdigit():
        return code
    code = int(code)
    return {0: "ok", 124: f"timed out after {budget} s", 137: f"killed after {budget} s"}.get(code, f"failed (exit {code})")

HEADLINE = {"train_step": ("bf16_speedup", "eval_bf16_speedup", "ptune_over_peft_bf16", "peft_bf16"),
            "ddp": ("nproc", "scaling_efficiency", "note"), "serve": ("mixed_over_switching",)}

def headline(found):
    """The numbers bench/README.md quotes, by part (None where the part did not give them); big_model: every
    `<quantized>_over_<plain>_...` ratio and each variant's ptune / PEFT, peak memory or reason."""
    heads = {}
    for name, part in found.items():
        result = part["result"] or {}
        keys = HEADLINE.get(name) or [k for k in result if "_over_" in k]
        heads[name] = {k: result.get(k) for k in keys}
    for name, variant in ((found.get("big_model") or {}).get("result") or {}).get("variants", {}).items():
        heads["big_model"][name] = {k: variant.get(k) for k in ("ptune_over_peft", "peak_mib", "skipped", "error")
                                    if variant.get(k) is not None}
    return {name: head for name, head in heads.items() if head}

found = {}
for line in parts.read_text().splitlines():
    name, code, spent, budget = line.split("\t")
    result = out / f"gpu_{name}.json"
    found[name] = {"status": outcome(code, budget), "seconds": int(spent), "budget_s": int(budget),
                   "result": json.loads(result.read_text()) if result.exists() and code == "0" else None}
tests = re.findall(r"^=* ?(\d+ (?:passed|failed|skipped|errors?|deselected)\b.*?) in [\d.]+s", (out / "gpu_check.log")
                   .read_text(errors="replace"), re.M)
if found.get("tests") and tests:
    found["tests"]["result"] = {"summary": tests[0].strip()}  # pytest's last line
cuda = torch.cuda.is_available()
doc = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "mode": "cpu" if mode == "--cpu" else "gpu",
       "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else ["cpu"],
       "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                    **{n: version(n) for n in ("transformers", "huggingface_hub", "peft", "bitsandbytes")}},
       "seconds": seconds, "headline": headline(found), "parts": found}
(out / "gpu_check.json").write_text(json.dumps(doc, indent=2) + "\n")
print(json.dumps({k: v for k, v in doc.items() if k != "parts"}))
for name, part in found.items():
    print(f"{name:11} {part['status']:45} {part['seconds']:4} s of {part['budget_s']}")
EOF
rm -f "$parts"
exit $status
