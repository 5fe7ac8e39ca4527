#!/usr/bin/env bash
# Everything this project checks and measures on a GPU, in one command (GPU time is short and each
# start of a lent machine costs minutes):
#   1. the `cuda` tests (tests/, marker `cuda`), and whether the built-in data draws the same pixels here;
#   2. the benchmark's CUDA section: training time and peak memory against ResNet-50, with a kernel profile;
#   2b. the compiled measurement: ResNet-50, SE and 3D-AFF trained under torch.compile (COMPILE_MODES), eager beside;
#   3. the experiment grids on the GPU (all rows, --seeds 3, 8 for resnet/se/aff3d), N runs side by side;
#   4. the budget study: plain, SE and 3D-AFF (table1's rows resnet, se, aff3d) at each of BUDGETS epochs,
#      one runner per budget, all at once, each with its share of the processes (BUDGET_JOBS);
#   5. the detection comparison (stage "detection", not in the default STAGES): Faster and Mask R-CNN, five
#      backbones, DETECTION_SEEDS seeds, then the half schedule of ResNet-50, SE and 3D-AFF with 2 seeds.
#      detectron2 is on no registry: build a wheel of it beside the project, carry it, and name it in D2_WHEEL.
# Each stage has its own time limit, so that one that fails or hangs leaves the others their time; a
# grid stopped at its limit keeps its finished runs (run the script again to continue them).
#
#   OUT=gpu_out bash scripts/gpu_session.sh              # from the repository root
#   GRID_S=900 GRID_JOBS=12 OUT=gpu_out bash scripts/gpu_session.sh
#   WORK=/tmp/gpu_session.AbCd STAGES=grid bash scripts/gpu_session.sh   # continue a grid on the same machine
#   STAGES="cuda_tests benchmark compiled" OUT=gpu_out bash scripts/gpu_session.sh   # tests and speed only (~8 min)
#
# Settings (environment): OUT (default runs/gpu_session), WORK (the work folder; default a new one under /tmp),
# STAGES (default "cuda_tests shapes_pixels benchmark compiled grid"; "budget" is the budget study), TESTS_S / BENCH_S /
# COMPILED_S / GRID_S / BUDGET_S (each stage's limit in seconds, default 150 / 150 / 280 / 1800 / 1800), COMPILE_MODES
# (torch.compile modes of the compiled stage, in order, default "reduce-overhead,default": CUDA graphs first, the
# launch-bound step's likely remedy; its file is written after
# each mode, so a stage stopped at its limit keeps the modes it finished), BUDGETS (epochs, default
# "12 24 48"), BUDGET_JOBS (processes per budget, in BUDGETS' order, default "2 5 9": the longer budget gets
# more), BUDGET_SEEDS (default 8; seed-major, so a stage stopped at its limit has whole seeds first), BUDGET_RECIPE
# (default experiments_shapes_v2), BUDGET_ARGS (extra arguments of each runner),
# GRID_JOBS (default: cores - 2), GRID_MPS (1: run the grid's and the budget study's processes
# under CUDA MPS when it starts, so that their small kernels share the GPU at once instead of by time slices),
# GRID_ARGS (extra arguments of `python -m torch_impl.experiments`), GRID_DEVICE (default cuda), PYTHON (default python3),
# GIT_COMMIT (recorded in each run when the tree has no .git), D2_WHEEL, DETECTION_JOBS (default 8), DETECTION_SEEDS
# (default 3), DETECTION_S / DETECTION_HALF_S (default 1800 / 900).
# Writes OUT/gpu_session.tar.gz (logs, benchmark_cuda.json and its profile, benchmark_compiled.json, the grids' results and each
# run's record, curve and metrics; no checkpoints) and OUT/summary.txt.
set -u
OUT=${OUT:-runs/gpu_session}
PY=${PYTHON:-python3}
W=${WORK:-$(mktemp -d /tmp/gpu_session.XXXX)}
STAGES=" ${STAGES:-cuda_tests shapes_pixels benchmark compiled grid} "
mkdir -p "$OUT" "$W/bench"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

say() { echo "$*" | tee -a "$SUMMARY"; }
want() { [[ $STAGES == *" $1 "* ]]; }
pack() { tar -czf "$OUT/gpu_session.tar.gz" -C "$W" --exclude='*.pth' --exclude='detection_runs/datasets' . 2>/dev/null; }
stage() {  # stage NAME LIMIT_S COMMAND...: run it, its output to $W/NAME.log; say how it ended
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    say "== $name (limit ${limit} s): $*"
    timeout -s INT -k 30 "$limit" "$@" > "$W/$name.log" 2>&1
    rc=$?
    say "== $name: exit $rc after $(( $(date +%s) - start )) s$([ $rc = 124 ] && echo ' (time limit)')"
    tail -n "${TAIL:-12}" "$W/$name.log" | tee -a "$SUMMARY"
    pack
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  "$PY" -c "import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__,
torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
  "$PY" -c "import triton; print('triton', triton.__version__)"; nproc; } > "$W/machine.txt" 2>&1
tee -a "$SUMMARY" < "$W/machine.txt"
say "work folder: $W"

# 1. The cuda tests. Collection errors elsewhere (a module needing a package the machine lacks) must
#    not stop them.
want cuda_tests && TAIL=25 stage cuda_tests "${TESTS_S:-150}" "$PY" -m pytest -o addopts="" -m cuda tests/ -q -rfEs \
    --continue-on-collection-errors -p no:cacheprovider

# 1b. Does this machine draw the same `shapes` pixels as the one the pinned fingerprints come from?
want shapes_pixels && stage shapes_pixels 60 "$PY" -m pytest -o addopts="" -q -p no:cacheprovider tests/test_data_shapes.py

# 2. The benchmark's CUDA section into the work folder (copied into docs/results/ by hand).
want benchmark && stage benchmark "${BENCH_S:-150}" "$PY" -m torch_impl.benchmark --sections cuda --reps 7 --steps 5 --profile \
    --out "$W/bench/benchmark"

# 2b. The compiled measurement into the same folder (benchmark_compiled.json; the report beside covers both): each
#     network's compile (the first step) takes about a minute or two, so few repetitions of few steps.
want compiled && stage compiled "${COMPILED_S:-280}" "$PY" -m torch_impl.benchmark \
    --compile-mode "${COMPILE_MODES:-reduce-overhead,default}" --reps 5 --steps 3 --out "$W/bench/benchmark"

{ want grid || want budget || want detection; } || { say "done: $(date -u)"; exit 0; }
MPS=none
if [ "${GRID_MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control > /dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=$W.mps CUDA_MPS_LOG_DIRECTORY=$W.mps  # beside the work folder: not packed
    mkdir -p "$W.mps"
    if nvidia-cuda-mps-control -d && timeout 60 "$PY" -c "import torch; print(torch.ones(2, device='cuda').sum().item())"; then
        MPS=on
    else
        echo quit | nvidia-cuda-mps-control 2> /dev/null
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
        MPS=failed
    fi
fi
say "MPS $MPS"

# 3. The grids, with the recipe's settings (experiments_shapes).
if want grid; then
    JOBS=${GRID_JOBS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
    say "grid: $JOBS runs side by side"
    # shellcheck disable=SC2086  # GRID_ARGS is a list of arguments
    stage grid "${GRID_S:-1800}" "$PY" -m torch_impl.experiments all --seeds 3 --seeds-for resnet=8,se=8,aff3d=8 \
        --first resnet,se,aff3d --device "${GRID_DEVICE:-cuda}" --jobs "$JOBS" --no-progress \
        --runs "$W/runs" --out "$W/grid" ${GRID_ARGS:-}
    say "grid: $(find "$W/runs" -name record.json | wc -l) runs finished"
fi

# 4. The budget study: one runner per budget, side by side; each its own results and runs folders.
if want budget; then
    read -r -a budgets <<< "${BUDGETS:-12 24 48}"
    read -r -a shares <<< "${BUDGET_JOBS:-2 5 9}"
    cmd=""
    for i in "${!budgets[@]}"; do
        e=${budgets[$i]}
        cmd+="\"\$PY\" -m torch_impl.experiments table1 --recipe ${BUDGET_RECIPE:-experiments_shapes_v2} \
            --rows resnet,se,aff3d --seeds ${BUDGET_SEEDS:-8} \
            --set epochs=$e --device ${GRID_DEVICE:-cuda} --jobs ${shares[$i]:-1} --no-progress \
            --runs \"\$W/budget_runs/e$e\" --out \"\$W/budget/e$e\" ${BUDGET_ARGS:-} > \"\$W/budget_e$e.log\" 2>&1 & "
    done
    # SIGINT at the stage's limit reaches this shell; it passes SIGTERM on to every runner, which stops its runs
    # (a non-interactive shell starts background jobs with SIGINT ignored).
    export PY W
    stage budget "${BUDGET_S:-1800}" bash -c "trap 'kill -TERM \$(jobs -p) 2> /dev/null; wait' INT TERM; $cmd wait"
    say "budget: $(find "$W/budget_runs" -name record.json | wc -l) runs finished"
fi
# 5. The detection comparison: the whole set, then the halving check, each a runner that resumes where it stopped.
if want detection; then
    [ -n "${D2_WHEEL:-}" ] && "$PY" -m pip install -q --no-deps "$D2_WHEEL" 2>&1 | tail -n 2 | tee -a "$SUMMARY"
    compare=("$PY" -m detectron2_ext.compare --detectors faster_rcnn,mask_rcnn --jobs "${DETECTION_JOBS:-8}")
    stage detection "${DETECTION_S:-1800}" "${compare[@]}" --seeds "${DETECTION_SEEDS:-3}" \
        --out "$W/detection/full" --runs "$W/detection_runs" MODEL.DEVICE cuda
    stage detection_half "${DETECTION_HALF_S:-900}" "${compare[@]}" --seeds 2 --backbones R_50,SE_R_50,AFF3D_R_50 \
        --schedule-scale 0.5 --out "$W/detection/half" --runs "$W/detection_runs" MODEL.DEVICE cuda
fi
[ "$MPS" = on ] && echo quit | nvidia-cuda-mps-control
pack
say "done: $(date -u)"
