#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, in about 8 minutes, writes into $OUT (default
# gpu_check/):
#   device.txt   the card, driver, torch/CUDA/cuDNN versions
#   tests.txt    the method contract tests on CUDA (OBLIQUE_TEST_DEVICE=cuda) and the CUDA-only tests
#   train.txt    a few hundred steps of ResNet-20 on synthetic CIFAR-shaped data, every method, fp32 and bf16
#   bench.txt    oblique bench --model resnet110 --batch-size 128 --methods all --device cuda (+ .json, .csv)
#   status.txt   one line per part: ok or the exit status
# Usage: scripts/gpu_check.sh [--dry-run]
#   --dry-run: the same parts on the CPU at toy size (no GPU needed; the CUDA-only tests skip).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
: > "$OUT/status.txt"
if [ "${1:-}" = "--dry-run" ]; then
  DEVICE=cpu EPOCHS=1 MODEL=resnet20 BATCH=8 BENCH="--rounds 2 --micro-repeats 2 --warmup 1"
else
  DEVICE=cuda EPOCHS=40 MODEL=resnet110 BATCH=128 BENCH="--time-budget 240"
fi

part() {  # part NAME COMMAND...: run, log to $OUT/NAME.txt, record the status, go on whatever happens
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/status.txt" >/dev/null
  "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "$name: $([ $rc -eq 0 ] && echo ok || echo "exit $rc")" >> "$OUT/status.txt"
}

part device python -c "
import torch, platform
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())
print('devices', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or 'none (CPU)')
print('python', platform.python_version())"
command -v nvidia-smi >/dev/null && nvidia-smi >> "$OUT/device.txt" 2>&1

part tests env OBLIQUE_TEST_DEVICE=$DEVICE python -m pytest -q -p no:cacheprovider \
  tests/test_methods_contract.py tests/test_cuda.py tests/test_cost_device.py -k "not cli_run"

part train oblique study --methods all --model resnet20 --dataset synthetic --device $DEVICE \
  --grid precision=fp32,bf16 --epochs $EPOCHS --batch-sizes 32 --seeds 1 --workers 1 \
  --no-figures --no-bench --no-progress --out "$OUT/train_study"

part bench oblique bench --model $MODEL --batch-size $BATCH --methods all --device $DEVICE $BENCH \
  --no-progress --json "$OUT/bench.json" --csv "$OUT/bench.csv"

cat "$OUT/status.txt"
! grep -q "exit" "$OUT/status.txt"
