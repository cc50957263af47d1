#!/usr/bin/env bash
# The README's accuracy comparison at equal training budgets, on this 2-core CPU machine.
#
#   bash scripts/compare.sh [WORKDIR]      (run from an environment where `dal` is installed)
#
# MINUTES=1 SEEDS=0 bash scripts/compare.sh smoke   runs the same steps with a 1-minute budget;
# MODELS="dal dae zscore" picks models (default: the nine of the list below; dal-aux-half, the
# step of before with the auxiliary terms on half the batch, and dal-population, scored against the
# healthy population as the shipped checkpoint is, on request); SCORE_ONLY=1 scores the runs
# already in WORKDIR/runs (named MODEL-sSEED) without training.
#
# Every trained model gets MINUTES (30) of training at one thread, validated every tenth of it,
# two runs side by side so that each has one core, once per seed of SEEDS ("0 1"). intensity and
# zscore have nothing to train: their runs fit (zscore: the population's mean and std in MNI152
# space at 1 mm) and calibrate. Every best checkpoint is then scored by `dal evaluate` on two test
# sets that no model trains or calibrates on:
#   eval-synth: 36 scans of the synthetic generator (12 subjects x t1, t2, flair; 27 with lesion);
#   eval-real:  the same lesion model implanted into a real T1 (ITK's KmeansTest_T1UCharRaw,
#               2x2x3 mm, Debian's insighttoolkit5-examples), its T2 and FLAIR rendered from its
#               own tissue maps: 36 scans, 27 with lesion;
# and `dal infer` runs on that real T1 itself, healthy, to count what each model calls a lesion.
# At the default budget: 4 pairs x 30 minutes per seed, about 2 h 10 min per seed with the scoring.
set -euo pipefail
work=${1:-compare}
configs=$(cd "$(dirname "$0")/../configs" && pwd)
scripts=$(cd "$(dirname "$0")" && pwd)
itk=${ITK_DATA:-/usr/share/doc/insighttoolkit5-examples/examples/Data}
real_t1=$itk/KmeansTest_T1UCharRaw.nii.gz
real_mask=$itk/KmeansTest_T1RawSkullStrip.nii.gz
if [[ ! -f $real_t1 || ! -f $real_mask ]]; then
  echo "compare.sh: the real-anatomy test needs $real_t1 and $real_mask (apt-get install insighttoolkit5-examples," \
       "or set ITK_DATA to the folder that holds them)" >&2
  exit 1
fi
mkdir -p "$work" && cd "$work"

minutes=${MINUTES:-30}
read -r -a seeds <<< "${SEEDS:-0 1}"
budget=(--minutes "$minutes" --threads 1 --val-minutes "$(python -c "print($minutes / 10)")" --quiet)
pair() {  # two training runs side by side: "NAME ARGS..." "NAME ARGS..."
  local first=($1) second=($2)
  echo "== training ${first[0]} and ${second[0]} ($minutes min each)"
  dal train --out "runs/${first[0]}" "${first[@]:1}" "${budget[@]}" > "runs-${first[0]}.log" 2>&1 &
  dal train --out "runs/${second[0]}" "${second[@]:1}" "${budget[@]}" > "runs-${second[0]}.log" 2>&1
  wait
}
declare -A args=(
  [dal]="--model dal" [dae]="--model dae" [ae]="--model ae"
  [dal-t1]="--model dal --config $configs/t1-only.yaml"
  [dal-no-restoration]="--model dal --config $configs/ablation-no-restoration.yaml"
  [dal-no-anomalies]="--model dal --config $configs/ablation-no-anomalies.yaml"
  [dal-no-onehot]="--model dal --config $configs/ablation-no-onehot.yaml"
  [dal-aux-half]="--model dal --config $configs/auxiliary-half.yaml"
  [dal-population]="--model dal --config $configs/population.yaml"
  [intensity]="--model intensity" [zscore]="--model zscore --config $configs/zscore.yaml"
)
read -r -a models <<< "${MODELS:-dal dae ae dal-t1 dal-no-restoration dal-no-anomalies dal-no-onehot intensity zscore}"
trained=() fitted=()
for model in "${models[@]}"; do
  [[ -n ${args[$model]:-} ]] || { echo "compare.sh: unknown model $model in MODELS" >&2; exit 1; }
  if [[ $model == intensity || $model == zscore ]]; then fitted+=("$model"); else trained+=("$model"); fi
done
mkdir -p runs
for seed in "${seeds[@]}"; do
  [[ -z ${SCORE_ONLY:-} ]] || break  # SCORE_ONLY=1: score the runs already in WORKDIR/runs
  for ((i = 0; i < ${#trained[@]}; i += 2)); do
    first=${trained[i]} second=${trained[i + 1]:-}
    if [[ -n $second ]]; then
      pair "$first-s$seed ${args[$first]} --seed $seed" "$second-s$seed ${args[$second]} --seed $seed"
    else
      echo "== training $first-s$seed ($minutes min)"
      dal train --out "runs/$first-s$seed" ${args[$first]} --seed "$seed" "${budget[@]}" > "runs-$first-s$seed.log" 2>&1
    fi
  done
  for model in "${fitted[@]}"; do
    echo "== calibrating $model-s$seed"
    dal train --out "runs/$model-s$seed" ${args[$model]} --seed "$seed" --quiet > "runs-$model-s$seed.log" 2>&1
  done
done

echo "== the test sets"
dal synth --out eval-synth --n 12 --contrast t1,t2,flair --lesions none,tumour,stroke,wmh --seed 1234 --overwrite
dal synth --out eval-real --anatomy "$real_t1" --anatomy-mask "$real_mask" --n 12 --contrast t1,t2,flair \
  --lesions none,tumour,stroke,wmh --seed 1234 --overwrite
for model in "${models[@]}"; do
  for seed in "${seeds[@]}"; do
    run=$model-s$seed
    echo "== scoring $run"
    for test in synth real; do
      dal evaluate --data "eval-$test" --model "runs/$run/best.safetensors" --out "eval-$test-out/$run" --no-overlays \
        --threads 2 --overwrite > /dev/null
    done
    dal infer "$real_t1" --mask "$real_mask" --contrast t1 --model "runs/$run/best.safetensors" --out "healthy/$run" \
      --no-overlay --overwrite > /dev/null
  done
done

table() {  # eval_table.py arguments, each model as NAME=its folders of every seed
  local mode=$1 pattern=$2 entries=()
  for model in "${models[@]}"; do
    local paths=()
    for seed in "${seeds[@]}"; do paths+=("${pattern//MODEL/$model-s$seed}"); done
    entries+=("$model=$(IFS=,; echo "${paths[*]}")")
  done
  python "$scripts/eval_table.py" $mode "${entries[@]}"
}
for test in synth real; do
  echo
  echo "## $test test: mean per-volume AP (seeds ${seeds[*]}: mean, and the range over seeds)"
  table --ap "eval-$test-out/MODEL"
  echo
  echo "## $test test: mean AP of each contrast x lesion cell"
  table --cells "eval-$test-out/MODEL"
done
echo
echo "## the real T1, healthy: what each model flags at its 1% threshold"
table --healthy "healthy/MODEL/KmeansTest_T1UCharRaw.json"
echo
echo "## synth and real tests in full"
table "" "eval-synth-out/MODEL"
table "" "eval-real-out/MODEL"
