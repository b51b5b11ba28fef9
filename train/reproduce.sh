#!/usr/bin/env bash
# Rebuild the bundled checkpoint and every number README reports for it, on 2 CPU cores:
#   1. the recipe, chosen on the artist-filtered valid list, the real songs' dev split and the valid list
#      through our recording chains together (trained on GTZAN's train list + the songs' train split;
#      temperature fitted on the valid list);
#   2. its evaluation: clean valid list, real songs (dev), the valid list through three recording chains,
#      the field set;
#   3. the final model: the same recipe on GTZAN train + valid and the songs' train + dev, no selection,
#      temperature cross-fitted (4 folds);
#   4. the finished checkpoint with its card, in RUNS/bundle (genrewiz/weights only with --install).
#
#   bash train/reproduce.sh [--install] GTZAN_DIR SPLITS_DIR FIELD_DIR SONGS_DIR [RUNS_DIR]
set -euo pipefail
INSTALL=0
if [[ "${1:-}" == "--install" ]]; then INSTALL=1; shift; fi
if [[ $# -lt 4 ]]; then
    echo "usage: bash train/reproduce.sh [--install] GTZAN_DIR SPLITS_DIR FIELD_DIR SONGS_DIR [RUNS_DIR]" >&2
    exit 2
fi
DATA=$1 SPLITS=$2 FIELD=$3 SONGS=$4 RUNS=${5:-runs}
# Chosen on valid + songs dev + recorded valid together (final-epoch scores; see README Results).
RECIPE=(--cnn-branch musicnn --audioset-branch mn04 --audioset-prior 2.0 --songs "$SONGS" --songs-low-confidence --epochs 12 --batch-size 16 --lr 3e-4 --warmup-epochs 1 --dropout 0.5 --mixup-alpha 0 --no-specaugment --views 4 --arrivals 4 --ear-arrivals 4 --level-db -17)

python -m train.train --data "$DATA" --split filtered --split-dir "$SPLITS" --allow-missing --exclude "$SPLITS/test_filtered.txt" --keep-last "${RECIPE[@]}" --out "$RUNS/filtered"
python -m train.evaluate --model "$RUNS/filtered" --data "$DATA" --split filtered --subset valid --split-dir "$SPLITS" --allow-missing --songs "$SONGS" --field "$FIELD"
python -m train.train --data "$DATA" --split trainval --split-dir "$SPLITS" --allow-missing --exclude "$SPLITS/test_filtered.txt" --calibration-folds 4 "${RECIPE[@]}" --out "$RUNS/final"
python -m train.card --model "$RUNS/final" --evaluation "$RUNS/filtered" --out "$RUNS/bundle" \
  --about-data "the artist-filtered train and valid lists (Kereliuk, Sturm and Larsen 2015) as far as present in a 319-clip GTZAN copy (188 train + 93 valid clips) and the train and dev splits of a set of 342 real songs from outside GTZAN (split by artist); no test-list clip was trained or selected on." \
  --reproduce "bash train/reproduce.sh GTZAN_DIR SPLITS_DIR FIELD_DIR SONGS_DIR"
if [[ $INSTALL == 1 ]]; then
    rm -f genrewiz/weights/*
    cp "$RUNS/bundle"/{config.json,model.safetensors,model.onnx,history.json,metrics.json,README.md,confusion_matrix.png,curves.png,classification_report.txt,reliability.png} genrewiz/weights/
    echo "installed $RUNS/bundle into genrewiz/weights"
else
    echo "finished checkpoint in $RUNS/bundle (pass --install to replace the bundled genrewiz/weights)"
fi
