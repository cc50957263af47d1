#!/usr/bin/env bash
# Creates (or updates) a virtual environment and installs dal into it with its compiled ops.
#   scripts/setup-venv.sh VENV [--cuda-if-nvcc]
# With --cuda-if-nvcc and nvcc on the PATH: torch 2.14.1 (CUDA 13.0) and FORCE_CUDA=1, so the CUDA
# kernels compile and link even on a machine without a GPU. Otherwise torch 2.13.0 (CPU build).
# The CUDA build is for TORCH_CUDA_ARCH_LIST, by default 8.0+PTX: one architecture, in CI's time,
# whose PTX every later GPU compiles at load (setup.py's own default is the full list, sm_80 to
# sm_120, which takes several times as long to build).
# DAL_TORCH overrides the torch requirement (e.g. DAL_TORCH='torch==2.11.*').
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:?usage: scripts/setup-venv.sh VENV [--cuda-if-nvcc]}

if [[ ${2:-} == --cuda-if-nvcc ]] && command -v nvcc >/dev/null; then
  torch_requirement=${DAL_TORCH:-torch==2.14.1}
  export FORCE_CUDA=1 CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0+PTX}
else
  torch_requirement=${DAL_TORCH:-torch==2.13.0}
fi

started=$SECONDS
step() {  # a numbered step line with the minutes since the start: set-up is long, never silent
  printf '== [%s/4, %dm%02ds] %s\n' "$1" $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) "$2"
}
pip_install() {  # pip, one line a package as it goes, without the local mirror's "Location ... is ignored" chatter
  "$venv/bin/python" -m pip install --progress-bar off "$@" 2> >(grep -v "is ignored: it is neither" >&2) \
    | { grep --line-buffered -E '^(Collecting|Installing collected|Successfully)' || true; } | sed -u 's/^/   /'
}

echo "== setting up $venv with $torch_requirement${FORCE_CUDA:+ and CUDA kernels (FORCE_CUDA=1)}"
echo "   (measured on 2 cores from an empty pip cache: 11 minutes and 1.8 GB for the CPU build; the CUDA one is larger, 6.3 GB)"
step 1 "virtual environment, pip, setuptools, wheel, ninja"
python3 -m venv "$venv"
pip_install --upgrade pip setuptools wheel ninja
step 2 "$torch_requirement and numpy (a large download)"
pip_install "$torch_requirement" numpy  # numpy first: torch's build helpers warn without it
step 3 "dal's dependencies, then dal's compiled ops (each compiled file is one line)"
# dal._C must be built against the torch of the venv it goes into: one build folder per venv.
log="$venv/dal-build.log"
if ! DAL_BUILD_DIR="$root/build/$(basename "$venv")" "$venv/bin/python" -m pip install -v --progress-bar off \
     --no-build-isolation "$root[test]" 2>&1 | tee "$log" \
     | { grep --line-buffered -E '^ *(\[[0-9]+/[0-9]+\]|Collecting|Successfully installed)' || true; } \
     | sed -u -E 's#^ *(\[[0-9]+/[0-9]+\]) .* -c ([^ ]+) .*#\1 compiling \2#; s/^ */   /'; then
  tail -n 40 "$log" >&2
  echo "error: installing dal failed; the whole log is $log" >&2
  exit 1
fi
step 4 "done in $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s ($(du -sh "$venv" | cut -f1)); build log: $log"
"$venv/bin/dal" --version
