#!/usr/bin/env bash
# One prepared run on a lent GPU machine (no network): install the carried wheels, then both GPU benches.
# Usage there: bash bench/device_run.sh OUTDIR    (wheels in .whl/, see BENCHMARKS.md)
set -uo pipefail
out=${1:?usage: bench/device_run.sh OUTDIR}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HYPIR_SWEEP_CACHE=/tmp/hypir-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, diffusers, peft, pyiqa; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__)" | tee -a "$out/gpu.txt"
python3 bench/gpu_train.py --steps 30 --warmup 5 --json "$out/gpu_train.json" 2>&1 | tee "$out/gpu_train.log"
python3 bench/validation.py --gpu --images 500 --size 512 --batch 8 --rounds 2 2>&1 | tee "$out/validation.log"
