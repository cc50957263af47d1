#!/usr/bin/env bash
# The README's accuracy comparison at equal training budgets, on this 2-core CPU machine.
#
#   bash scripts/compare.sh [WORKDIR]      (run from an environment where `dal` is installed)
#
# MINUTES=1 bash scripts/compare.sh smoke  runs the same steps with a 1-minute budget.
#
# Every trained model gets 30 minutes of training at one thread, validated every 3 minutes of
# training, and the runs go two side by side so that each has one core. The raw-intensity
# baseline has nothing to train: its run only calibrates its thresholds. Then every best
# checkpoint is scored by `dal evaluate` on one synthetic test set, and the tables are printed.
set -euo pipefail
work=${1:-compare}
configs=$(cd "$(dirname "$0")/../configs" && pwd)
scripts=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work" && cd "$work"

minutes=${MINUTES:-30}
budget=(--minutes "$minutes" --threads 1 --val-minutes "$(python -c "print($minutes / 10)")" --quiet)
pair() {  # two training runs side by side: "NAME ARGS..." "NAME ARGS..."
  local first=($1) second=($2)
  dal train --out "runs/${first[0]}" "${first[@]:1}" "${budget[@]}" > "runs-${first[0]}.log" 2>&1 &
  dal train --out "runs/${second[0]}" "${second[@]:1}" "${budget[@]}" > "runs-${second[0]}.log" 2>&1
  wait
}
mkdir -p runs
pair "dal --model dal" "ae --model ae"
pair "dae --model dae" "dal-t1 --model dal --config $configs/t1-only.yaml"
pair "dal-no-restoration --model dal --config $configs/ablation-no-restoration.yaml" \
     "dal-no-onehot --model dal --config $configs/ablation-no-onehot.yaml"
dal train --out runs/intensity --model intensity --quiet

dal synth --out eval-synth --n 12 --contrast t1,t2,flair --lesions none,tumour,stroke,wmh --seed 1234 --overwrite
models=(dal ae dae intensity dal-t1 dal-no-restoration dal-no-onehot)
for model in "${models[@]}"; do
  dal evaluate --data eval-synth --model "runs/$model/best.safetensors" --out "eval/$model" --no-overlays --threads 2 --overwrite
done
pairs=()
for model in "${models[@]}"; do pairs+=("$model=eval/$model"); done
python "$scripts/eval_table.py" --ap "${pairs[@]}"
python "$scripts/eval_table.py" "${pairs[@]}"
