#!/usr/bin/env bash
# Rebuild the bundled checkpoint and every number README reports for it, on 2 CPU cores:
#   1. the recipe, chosen on the artist-filtered valid list (trained on the train list only);
#   2. 5-fold CV on GTZAN-mini with the same recipe (test-list clips left out), comparable with earlier figures;
#   3. the final model: the same recipe on train + valid, no selection;
#   4. the finished checkpoint with its card, in RUNS/bundle (genrewiz/weights only with --install).
#
#   bash train/reproduce.sh [--install] GTZAN_DIR GTZAN_MINI_DIR SPLITS_DIR [RUNS_DIR]
set -euo pipefail
INSTALL=0
if [[ "${1:-}" == "--install" ]]; then INSTALL=1; shift; fi
if [[ $# -lt 3 ]]; then
    echo "usage: bash train/reproduce.sh [--install] GTZAN_DIR GTZAN_MINI_DIR SPLITS_DIR [RUNS_DIR]" >&2
    exit 2
fi
DATA=$1 MINI=$2 SPLITS=$3 RUNS=${4:-runs}
# Chosen on the valid list (final-epoch scores of a small grid over lr, epochs, dropout, weight decay, augmentation).
RECIPE=(--cnn-branch musicnn --epochs 12 --batch-size 16 --lr 3e-4 --warmup-epochs 1 --dropout 0.5 --mixup-alpha 0 --no-specaugment --views 4)

python -m train.train --data "$DATA" --split filtered --split-dir "$SPLITS" --allow-missing --keep-last "${RECIPE[@]}" --out "$RUNS/filtered"
python -m train.evaluate --model "$RUNS/filtered" --data "$DATA" --split filtered --subset valid --split-dir "$SPLITS" --allow-missing
python -m train.train --data "$MINI" --split kfold --folds 5 --exclude "$SPLITS/test_filtered.txt" "${RECIPE[@]}" --out "$RUNS/mini-cv"
python -m train.train --data "$DATA" --split trainval --split-dir "$SPLITS" --allow-missing "${RECIPE[@]}" --out "$RUNS/final"
python -m train.card --model "$RUNS/final" --evaluation "$RUNS/filtered" --also "$RUNS/mini-cv" --out "$RUNS/bundle" \
  --about-data "the artist-filtered train and valid lists (Kereliuk, Sturm and Larsen 2015) as far as present in a 319-clip GTZAN copy: 188 train + 93 valid clips; no test-list clip was trained or selected on." \
  --reproduce "bash train/reproduce.sh GTZAN_DIR GTZAN_MINI_DIR SPLITS_DIR"
if [[ $INSTALL == 1 ]]; then
    rm -f genrewiz/weights/*
    cp "$RUNS/bundle"/{config.json,model.safetensors,model.onnx,history.json,metrics.json,README.md,confusion_matrix.png,curves.png,classification_report.txt} genrewiz/weights/
    echo "installed $RUNS/bundle into genrewiz/weights"
else
    echo "finished checkpoint in $RUNS/bundle (pass --install to replace the bundled genrewiz/weights)"
fi
