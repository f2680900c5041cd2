#!/usr/bin/env bash
# Every GPU throughput measurement (issue 12) in one run of about 9 minutes; all numbers under OUTDIR.
#
#   bash bench/device_check.sh OUTDIR              on a lent GPU machine (no network): carry .gpu-bundle/,
#                                                  built here with bash ../shared/gpu/make-bundle.sh
#   bash bench/device_check.sh OUTDIR --cpu-smoke  the same steps on the tiny model on the CPU (checks the code)
#
# Phases, each under its own time limit so one cannot eat the others' time; each writes its JSON as it goes:
#   train       bench/gpu_train.py: matmul rate, FLOPs, then checkpointing on/off x eager/compiled, a profile
#   share       bench/gpu_share.py: two trials sharing the GPU (resources.gpu 0.5) against one alone
#   validation  bench/validation.py --gpu --compile: a 500-image 512x512 round
# OUTDIR/phases.txt lists each phase's exit code and seconds (124 = cut at its limit); OUTDIR/summary.md
# has the tables. PHASES="train validation" runs a subset; SHARE_COMPILE=1 compiles the sharing trials.
set -uo pipefail
out=${1:?usage: bash bench/device_check.sh OUTDIR [--cpu-smoke]}
mode=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
: > "$out/phases.txt"

phase() {  # phase NAME SECONDS COMMAND...: run COMMAND under a time limit, log to OUTDIR/NAME.log
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  timeout -k 10 "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - start))s" | tee -a "$out/phases.txt"
}

if [ "$mode" = "--cpu-smoke" ]; then
  export PYTHONPATH=$PWD
  smoke=--cpu-smoke
  gpu_args=()
  validation_args=(--rounds 2)
  limit_train=1500 limit_share=900 limit_validation=900
else
  if [ -f .gpu-bundle/install.sh ]; then
    bash .gpu-bundle/install.sh > "$out/install.log" 2>&1 || echo "bundle install failed: see install.log" >> "$out/phases.txt"
  fi
  export PYTHONPATH=/tmp/site:$PWD HYPIR_SWEEP_CACHE=/tmp/hypir-cache
  smoke=
  gpu_args=(--profile eager-nockpt,compile-nockpt)
  validation_args=(--gpu --images 500 --size 512 --batch 8 --rounds 2)
  limit_train=270 limit_share=110 limit_validation=130
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/env.txt" 2>&1
fi
python3 -c "import sys, torch, diffusers, peft; print(sys.version.split()[0], 'torch', torch.__version__,
  'diffusers', diffusers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())" >> "$out/env.txt" 2>&1

phases=${PHASES:-train share validation}
case " $phases " in *" train "*)
  phase train "$limit_train" python3 bench/gpu_train.py --out "$out" --steps 10 --warmup 3 $smoke ${gpu_args[@]+"${gpu_args[@]}"} ;;
esac
case " $phases " in *" share "*)
  alone=()
  [ -f "$out/gpu_train.json" ] && alone=(--alone "$out/gpu_train.json")
  phase share "$limit_share" python3 bench/gpu_share.py --out "$out" --steps 10 --warmup 2 ${alone[@]+"${alone[@]}"} \
    ${SHARE_COMPILE:+--compile} $smoke ;;
esac
case " $phases " in *" validation "*)
  phase validation "$limit_validation" python3 bench/validation.py --compile --ours-only --json "$out/validation.json" \
    "${validation_args[@]}" ;;
esac
python3 bench/summarize.py "$out" > "$out/summary.md" 2>&1
cat "$out/phases.txt" "$out/summary.md"
