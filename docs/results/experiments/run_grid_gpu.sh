#!/usr/bin/env bash
# The whole grid of docs/results/experiments/ on one CUDA GPU, then Table 7's Grad-CAM measurement.
# Not run by us (no GPU here). 51 small runs (12 networks x 3 seeds, plus seeds 3-7 of ResNet, SE and
# 3D-AFF), JOBS of them side by side on the one GPU; the same budget as the CPU grid (recipe
# experiments_shapes), written to a separate folder: GPU kernels are not bit-identical to the CPU's.
# Resumable: run it again after an interruption. Usage: bash docs/results/experiments/run_grid_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
JOBS=${JOBS:-8}
OUT=${OUT:-docs/results/experiments-gpu}
RUNS=${RUNS:-runs/experiments-gpu}
python -m torch_impl.experiments all --seeds 3 --seeds-for resnet=8,se=8,aff3d=8 --jobs "$JOBS" \
    --device cuda --out "$OUT" --runs "$RUNS"
python -m torch_impl.experiments.gradcam --results "$OUT/table1/results.json" --runs "$RUNS" \
    --seeds 0,1,2,3,4,5,6,7 --out "$OUT/gradcam" --checkpoints "$OUT/checkpoints"
