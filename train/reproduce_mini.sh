#!/usr/bin/env bash
# Rebuild the bundled weights in genrewiz/weights from the 80-clip GTZAN-mini subset:
# 5-fold cross-validation for the numbers, then the same recipe on all 80 clips for the weights.
#   bash train/reproduce_mini.sh [GTZAN_MINI_DIR] [RUNS_DIR]
set -euo pipefail
DATA=${1:-../shared/gtzan-mini}
RUNS=${2:-runs}
RECIPE=(--batch-size 8 --epochs 80 --lr 1e-3)

python -m train.train --data "$DATA" --split kfold --folds 5 "${RECIPE[@]}" --out "$RUNS/mini-cv"
python -m train.train --data "$DATA" --split all "${RECIPE[@]}" --out "$RUNS/mini-all"
python -m train.card --model "$RUNS/mini-all" --evaluation "$RUNS/mini-cv" --out genrewiz/weights \
  --about-data "the 80-clip GTZAN-mini subset (8 clips per genre, GTZAN ids 00000-00007; jazz 00000-00002 and 00004-00008), sample-identical to the original GTZAN clips." \
  --reproduce "bash train/reproduce_mini.sh path/to/gtzan-mini"
