#!/usr/bin/env bash
# The prepared GPU check (docs/training.md "GPU"): run it once whenever a session is lent a GPU machine, keep
# the JSON, put the numbers in the README. About 3-5 minutes on one H200; never needed by `make test`.
#
# Prepare here (the GPU machine has no network; its python3 has torch, peft, safetensors, an older
# transformers): pin ptune's transformers and huggingface_hub as wheels in .whl/, ignored by git:
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       "transformers==$(.venv/bin/python -c 'import transformers; print(transformers.__version__)')" \
#       "huggingface_hub==$(.venv/bin/python -c 'import huggingface_hub; print(huggingface_hub.__version__)')"
# Then the device tool: run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540).
# Writes $OUT/gpu_tests.log, $OUT/gpu_train_step.json (or bench/results/ when $OUT is unset).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  PTUNE_HOME=/tmp/ptune-home DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
  torch.cuda.get_device_name() if torch.cuda.is_available() else "-", "transformers", transformers.__version__)'
status=0
echo "== CUDA tests"
timeout 240 python3 -m pytest -q -m cuda tests/ptune/model/test_cuda.py -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.log" || status=1
echo "== train step and evaluation forward, fp32 vs bf16, ptune vs PEFT"
timeout 240 python3 bench/bench_gpu.py --reps 20 --out "$out/gpu_train_step.json" || status=1
exit $status
