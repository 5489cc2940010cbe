#!/usr/bin/env bash
# A small-scale sanity ablation on a CPU: every preset of the paper's Tables 1-6, trained from
# scratch at CPU scale on the generated shapes dataset, evaluated, and gathered into the same
# tables as scripts/paper_tables.py prints for COCO runs. NOT a COCO result: it shows that the
# presets, training, evaluation and tables work end to end, and how noisy short runs are.
#
#   scripts/ablation_cpu.sh [--seeds K] [--steps N] [--dry-run] [--out RESULTS.md]
#
# CPU scale (maskplus/presets.py, cpu_scale_overrides): a small GroupNorm ResNet-FPN (CPU_MODEL) at
# 256 px instead of R50-FPN at 800 px, each row's techniques at that model's width (128 instead
# of 256 channels), N steps of one image (default 600) at a constant learning rate after warm-up.
# Environment: DATA (default datasets/shapes, generated if absent), LOGROOT (default
# train_log/ablation_cpu), PYTHON (default .venv/bin/python), CHART (the ΔAP bar chart, default
# docs/ablation_cpu_delta_ap.png). One log directory per preset and seed; a finished run is reused.
# Writes the tables, the chart, the command and the wall-clock time to --out.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
SEEDS=2; STEPS=600; DRY=0; OUT=RESULTS.md
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 ;;
  esac
done
[[ "$SEEDS" =~ ^[1-9][0-9]*$ ]] || { echo "--seeds must be a positive integer, got '$SEEDS'" >&2; exit 2; }
[[ "$STEPS" =~ ^[1-9][0-9]*$ ]] || { echo "--steps must be a positive integer, got '$STEPS'" >&2; exit 2; }

PYTHON=${PYTHON:-.venv/bin/python}
DATA=$(realpath -m "${DATA:-datasets/shapes}")
LOGROOT=${LOGROOT:-train_log/ablation_cpu}
CHART=${CHART:-docs/ablation_cpu_delta_ap.png}
START=$(date +%s)
# read before anything is written: the chart this script writes is a tracked file
COMMIT=$(git describe --always --dirty 2>/dev/null || echo unknown)
CPU=$("$PYTHON" -c "from maskplus.precision import cpu_model_name; print(cpu_model_name())" 2>/dev/null || true)

run() { if [ "$DRY" = 1 ]; then printf '%q ' "$@"; echo; else printf '+ %s\n' "$*" >&2; "$@"; fi; }

if [ ! -f "$DATA/annotations/instances_val2017.json" ]; then
  run "$PYTHON" scripts/make_shapes_dataset.py --out "$DATA" --train 1500 --val 100 --seed 0
fi

# every preset of Tables 1-6, each once, in the paper's order
PRESETS=$("$PYTHON" -c "
import json
seen = []
for t in sorted(json.load(open('maskplus/evaluation/paper_numbers.json'))['tables'].items(), key=lambda t: int(t[0])):
    seen += [r['preset'] for r in t[1]['rows'] if r['preset'] not in seen]
print(' '.join(seen))")

SCHEDULE=$("$PYTHON" -c "print([$STEPS / 8] * 3)")  # batch-8 steps; one tower runs 8x as many
# biased training's early stage: the first third of the run, as 120k of the paper's 360k
ALPHA=$("$PYTHON" -c "print([[0, 1.5], [$STEPS / 24, 1.0]])")
declare -A SCALE_OF
current=""
while IFS= read -r line; do
  if [[ "$line" == "# "* ]]; then current=${line#\# }; SCALE_OF[$current]=""
  else SCALE_OF[$current]+="$line"$'\n'; fi
done < <("$PYTHON" -m maskplus.presets --cpu-scale $PRESETS 2>/dev/null)
for preset in $PRESETS; do
  [ -n "${SCALE_OF[$preset]:-}" ] || { echo "no CPU-scale overrides for preset '$preset'" >&2; exit 1; }
done
# seed-major, so that an interrupted ablation has whole tables for its first seeds
for seed in $(seq 1 "$SEEDS"); do
  for preset in $PRESETS; do
    mapfile -t SCALE < <(printf '%s' "${SCALE_OF[$preset]}")
    logdir="$LOGROOT/$preset/seed$seed"
    results="$logdir/eval/coco_val2017.json"
    if [ "$DRY" = 0 ] && [ -f "${results%.json}-metrics.json" ]; then
      echo "$preset seed $seed: already evaluated ($results)" >&2; continue
    fi
    common=("${SCALE[@]}" "DATA.BASEDIR=$DATA" "DATA.SEED=$seed")
    run "$PYTHON" train.py --preset "$preset" --logdir "$logdir" --config "${common[@]}" \
      "TRAIN.LR_SCHEDULE=$SCHEDULE" "MASKPLUS.MASK_LOSS_ALPHA=$ALPHA" TRAIN.BASE_LR=0.06 TRAIN.WARMUP_INIT_LR=0.006 \
      TRAIN.WARMUP=200 TRAIN.STEPS_PER_EPOCH=150 TRAIN.EVAL_PERIOD=0 TRAIN.CHECKPOINT_PERIOD=1000
    # the run directory gives the model's config (its run.json): only where the data is
    run "$PYTHON" predict.py --load "$logdir" --evaluate "$results" --config "DATA.BASEDIR=$DATA"
  done
done
[ "$DRY" = 1 ] && exit 0

MINUTES=$(( ($(date +%s) - START + 59) / 60 ))
TABLES=$(mktemp)
mkdir -p "$(dirname "$CHART")"
# ΔAP intervals: a paired bootstrap over the validation images of each run's results file
"$PYTHON" scripts/paper_tables.py "$LOGROOT"/*/seed* --annotations "$DATA/annotations/instances_val2017.json" \
  --markdown "$TABLES" --chart "$CHART" >/dev/null
{
  echo "# CPU-scale sanity ablation on the generated shapes dataset, not COCO ($(date -u +%Y-%m-%d), commit $COMMIT, $(nproc)-core ${CPU:-unknown CPU})"
  echo
  echo "Produced by \`scripts/ablation_cpu.sh --seeds $SEEDS --steps $STEPS\` on $(date -u +%Y-%m-%d)"
  echo "($(nproc) CPU cores; this invocation took $MINUTES min, reused runs not counted)."
  echo
  echo "Every preset of Tables 1-6 at CPU scale: a small GroupNorm ResNet-FPN (2fc box head) trained from"
  echo "scratch for $STEPS steps of one 256-px image, techniques at 128 channels, evaluated on the 100"
  echo "generated validation images; mean ± std over $SEEDS seeds. The \"paper\" columns are the"
  echo "paper's COCO numbers, shown for the layout only: these runs say that the pipeline works end to"
  echo "end and how large run-to-run noise is at this scale, not whether a technique helps on COCO."
  echo "Each ΔAP has two 95% intervals: a paired bootstrap over the validation images (mean over seeds"
  echo "on both sides), and that interval widened by both rows' seed-to-seed spread (needs two seeds a"
  echo "row). The verdict on the paper's claimed gain reads the second (confirms: above 0; contradicts:"
  echo "below 0; cannot tell: it holds 0; no verdict with one seed), and at this scale says nothing"
  echo "about COCO (docs/COMPARING.md)."
  echo
  echo "![ΔAP per technique, ours and the paper's]($(realpath --relative-to="$(dirname "$OUT")" "$CHART"))"
  echo
  cat "$TABLES"
} > "$OUT"
rm -f "$TABLES"
echo "Wrote $OUT (and $CHART) in $MINUTES min."
