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

pip_quiet() {  # pip, without the local mirror's "Location ... is ignored" chatter
  "$venv/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}

echo "== setting up $venv with $torch_requirement${FORCE_CUDA:+ and CUDA kernels (FORCE_CUDA=1)}"
python3 -m venv "$venv"
pip_quiet --upgrade pip setuptools wheel ninja
pip_quiet "$torch_requirement" numpy  # numpy first: torch's build helpers warn without it
# dal._C must be built against the torch of the venv it goes into: one build folder per venv.
DAL_BUILD_DIR="$root/build/$(basename "$venv")" pip_quiet --no-build-isolation "$root[test]"
"$venv/bin/dal" --version
