#!/usr/bin/env bash
# The README's main-job command: a virtual environment .venv with dal built for the CPU, then a
# labelled synthetic FLAIR scan with a tumour (`dal synth`) and `dal infer` on it with the shipped
# checkpoint. Outputs: demo/ (the scan, its mask and label) and demo-out/ (maps, mask, overlay, JSON).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-venv.sh .venv
echo "== a labelled synthetic FLAIR scan with a tumour (dal synth, a few seconds)"
.venv/bin/dal synth --out demo --n 1 --contrast flair --lesions tumour --seed 1 --overwrite
echo "== dal infer on it with the shipped checkpoint (a few seconds; --verbose prints its stages)"
.venv/bin/dal infer demo/synth-0000/synth-0000_flair.nii.gz --out demo-out --verbose --overwrite
echo "overlay: $PWD/demo-out/synth-0000_flair_overlay.png"
echo "report:  $PWD/demo-out/synth-0000_flair.json"
