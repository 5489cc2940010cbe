#!/usr/bin/env bash
# Train and evaluate every row of one of the paper's tables.
#
#   scripts/reproduce_table.sh N [--seeds K] [--dry-run] [--trainer replicated|horovod] [--gpus G]
#
# Environment: COCO_DIR (holding annotations/ train2017/ val2017/), BACKBONE_NPZ
# (ImageNet-R50-AlignPadding.npz), LOGROOT (default train_log/paper), PYTHON (default .venv/bin/python),
# HOSTS (horovod only, default localhost:G). --gpus G (default 8, the paper's 8 GPUs x 1 image) is
# the tower count: 1, 2, 4 or a multiple of 8; it must not exceed the GPUs TensorFlow sees on this
# machine (checked unless --dry-run, or horovod on other hosts). One log directory per preset and seed,
# $LOGROOT/<preset>/seed<k>, shared between tables (Tables 5 and 6 are the same runs); a row whose
# evaluation already exists is skipped, a row whose training stopped resumes.
# Then: python scripts/paper_tables.py $LOGROOT/*/seed*
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
[ $# -ge 1 ] || usage 2
case "$1" in -h|--help) usage 0 ;; esac
TABLE=$1; shift
SEEDS=1; DRY=0; TRAINER=replicated; GPUS=8
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --trainer) TRAINER=$2; shift 2 ;;
    --gpus) GPUS=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 ;;
  esac
done
case "$TABLE" in 1|2|3|4|5|6) ;; *) echo "table must be 1-6, got '$TABLE'" >&2; exit 2 ;; esac
case "$TRAINER" in replicated|horovod) ;; *) echo "--trainer must be replicated or horovod" >&2; exit 2 ;; esac
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || { echo "--gpus must be a positive integer, got '$GPUS'" >&2; exit 2; }

PYTHON=${PYTHON:-.venv/bin/python}
LOGROOT=${LOGROOT:-train_log/paper}
COCO_DIR=${COCO_DIR:-~/data/coco}
BACKBONE_NPZ=${BACKBONE_NPZ:-~/data/ImageNet-R50-AlignPadding.npz}
HOSTS=${HOSTS:-localhost:$GPUS}

# More towers than GPUs would run the extra ones on the CPU (soft placement): refuse instead.
if [ "$DRY" = 0 ] && { [ "$TRAINER" = replicated ] || [[ "$HOSTS" =~ ^localhost:[0-9]+$ ]]; }; then
  visible=$("$PYTHON" -c 'import maskplus.compat, tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))' \
            2>/dev/null | tail -n 1) || visible=""
  [[ "$visible" =~ ^[0-9]+$ ]] || { echo "error: $PYTHON cannot import TensorFlow to count the GPUs (make venv, or set PYTHON)" >&2; exit 1; }
  if [ "$visible" -lt "$GPUS" ]; then
    echo "error: --gpus $GPUS asks for $GPUS GPUs but TensorFlow sees $visible on this machine: give --gpus N for the N GPUs here (1, 2, 4 or a multiple of 8)" >&2
    exit 1
  fi
fi

ROWS=$("$PYTHON" -c "import json; t = json.load(open('maskplus/evaluation/paper_numbers.json'))['tables']['$TABLE']; print(' '.join(r['preset'] for r in t['rows']))")

run() { if [ "$DRY" = 1 ]; then echo "$*"; else echo "+ $*" >&2; eval "$@"; fi; }

for preset in $ROWS; do
  for seed in $(seq 1 "$SEEDS"); do
    logdir="$LOGROOT/$preset/seed$seed"
    results="$logdir/eval/coco_val2017.json"
    if [ "$DRY" = 0 ] && [ -f "${results%.json}-metrics.json" ]; then
      echo "$preset seed $seed: already evaluated ($results)" >&2; continue
    fi
    config="DATA.BASEDIR=$COCO_DIR BACKBONE.WEIGHTS=$BACKBONE_NPZ DATA.SEED=$seed TRAIN.EVAL_PERIOD=0"
    if [ "$TRAINER" = horovod ]; then
      run "horovodrun -np $GPUS -H $HOSTS $PYTHON train.py --preset $preset --logdir $logdir --config $config TRAINER=horovod"
    else
      run "$PYTHON train.py --preset $preset --logdir $logdir --config $config TRAIN.NUM_GPUS=$GPUS"
    fi
    run "$PYTHON predict.py --load $logdir --evaluate $results --config DATA.BASEDIR=$COCO_DIR DATA.VAL=coco_val2017"
  done
done
