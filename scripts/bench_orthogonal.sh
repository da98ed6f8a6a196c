#!/usr/bin/env bash
# The cost bench of the README ("What each method costs"): every method on ResNet-110, batch 32, CPU,
# 2 threads, with the A/A control and the cost targets, about 7-8 minutes.
# Run it on a quiet machine (nothing else using the cores): other processes inflate the A/A floor and
# the per-layer references, and the 2-thread timings of small operations suffer most.
#
#   scripts/bench_orthogonal.sh [OUT_DIR]        # writes OUT_DIR/bench.json, OUT_DIR/bench.csv, OUT_DIR/bench.txt
set -euo pipefail
out="${1:-bench-resnet110}"
mkdir -p "$out"
oblique bench --model resnet110 --batch-size 32 --methods all --device cpu --threads 2 \
    --json "$out/bench.json" --csv "$out/bench.csv" --no-progress | tee "$out/bench.txt"
