#!/usr/bin/env bash
# The GPU check: every GPU figure the project claims, in one run on a machine with one CUDA GPU (under 8 minutes).
#
#   bench/gpu_check.sh [ISBI_DIR]     ISBI_DIR holds images/ and masks/ (default: ../shared/data/isbi2012 beside
#                                     the checkout, as config/isbi2012.yaml expects)
#
# 1. training images/s, ours vs MONAI, and the share of the GPU's dense bf16 peak  (bench/train_throughput.py)
# 2. tiled prediction, ours vs MONAI, at equal output (float32) and at equal masks   (bench/predict_vs_monai.py)
# 3. the whole workflow on ISBI 2012 with train.budget_minutes: 5, and its test Dice per class
# 4. peak GPU memory of that training
# It stops with a message and exit status 2 when torch sees no CUDA GPU (or the data is missing), and fails when any
# step fails. GPU_CHECK_DRY_RUN=1 runs the same steps through the same Python entry points on the CPU with tiny sizes
# (a smoke test of the script's logic, tests/test_gpu_check.py; its figures mean nothing).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${1:-$REPO/../shared/data/isbi2012}
PYTHON=${PYTHON:-python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
START=$SECONDS

fail() {
    echo "gpu_check: FAILED: $*" >&2
    exit 2
}

if [[ ${GPU_CHECK_DRY_RUN:-0} == 1 ]]; then
    echo "gpu_check: DRY RUN on the CPU with tiny sizes: the figures below are not GPU figures"
    DEVICE=cpu
    TRAIN_ARGS=(--device cpu --size 32 --batch 2 --steps 1 --rounds 1 --cases 4 --base-width 4)
    PREDICT_ARGS=(--device cpu --images 1 --size 64 --tile 32 --depth 2 --base-width 4 --rounds 1)
    TRAIN_CFG="{device: cpu, epochs: null, budget_minutes: 0.05, iterations_per_epoch: 2, batch_size: 2,
                patch_size: [32, 32], depth: 2, base_width: 4, lr_schedule: poly}"
else
    "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" ||
        fail "torch $("$PYTHON" -c 'import torch; print(torch.__version__)') sees no CUDA GPU; this check needs one (GPU_CHECK_DRY_RUN=1 tries its steps on the CPU)"
    "$PYTHON" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
    DEVICE=cuda
    TRAIN_ARGS=(--device cuda --size 256 --batch 32 --steps 10 --rounds 2 --workers 4)
    PREDICT_ARGS=(--device cuda --images 4 --size 1024 --rounds 2)
    TRAIN_CFG="{device: cuda, epochs: null, budget_minutes: 5, lr_schedule: poly}"  # the rest planned
fi
[[ -d $DATA/images && -d $DATA/masks ]] || fail "no data at $DATA (images/ and masks/); pass the ISBI 2012 folder"

step() {
    echo
    echo "== $1 ($((SECONDS - START)) s so far)"
}

step "1/4 training throughput, ours vs MONAI"
"$PYTHON" "$REPO/bench/train_throughput.py" "${TRAIN_ARGS[@]}"

step "2/4 tiled prediction, ours vs MONAI"
"$PYTHON" "$REPO/bench/predict_vs_monai.py" "${PREDICT_ARGS[@]}"

step "3/4 ISBI 2012, whole workflow, training for its budget"
cat >"$WORK/config.yaml" <<EOF
results: results
data: {images: $DATA/images, masks: $DATA/masks, classes: {membrane: 0, cell: 255}}
split: {train: 0.6, val: 0.1, test: 0.3, seed: 0}
train: $TRAIN_CFG
predict: {overlap: 0.5, mirror: true}
EOF
"$PYTHON" -m snakemake -s "$REPO/Snakefile" --directory "$WORK" --configfile "$WORK/config.yaml" --cores all \
    --resources gpu=1 --quiet rules >"$WORK/snakemake.log" 2>&1 || {
    tail -n 60 "$WORK/snakemake.log" >&2
    fail "the workflow failed (log: $WORK/snakemake.log)"
}
TRAIN_LOG=$WORK/results/logs/unet/train_fold0.log
grep -E "plan for|plan:" "$WORK/results/logs/unet/plan.log"  # the plan, made once per experiment by the plan rule
grep -E "budget:|trained [0-9]+ steps|best validation" "$TRAIN_LOG"
"$PYTHON" - "$WORK/results/unet/evaluate/summary.parquet" <<'EOF'
import sys

import pandas as pd

summary = pd.read_parquet(sys.argv[1])
for row in summary[summary["class"] > 0].itertuples():
    print(f"test Dice {row.class_name}: {row.dice_mean:.3f} +- {row.dice_std:.3f} ({row.n_cases} cases)")
EOF

step "4/4 peak memory of the training ($DEVICE)"
grep "peak memory" "$TRAIN_LOG"

echo
echo "gpu_check: done in $((SECONDS - START)) s on $DEVICE; results in $WORK"
