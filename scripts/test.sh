#!/usr/bin/env bash
# The README's test command: a virtual environment .venv-test with dal built (its CUDA kernels
# too where nvcc is found), then the dal_core C++ tests (CTest) and every Python test (pytest), and
# on AVX-512 CPUs the Sobel tests a second time, on the portable CPU kernel. Extra arguments go
# to the first pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-venv.sh .venv-test --cuda-if-nvcc
echo "== dal_core C++ tests: configuring and building them (CMake), then running them (CTest)"
cmake -S . -B build/dal_core -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build/dal_core -j 2 | { grep --line-buffered -E '^\[ *[0-9]+%\] Built target' || true; } | sed -u 's/^/   /'
ctest --test-dir build/dal_core --output-on-failure
echo "== Python tests (pytest: a dot a test passed, s skipped, F failed)"
.venv-test/bin/python -m pytest "$@"
if .venv-test/bin/python -c 'from dal import ops; raise SystemExit(ops.cpu_kernel("sobel") != "avx512")'; then
  echo "== the Sobel tests again, on the portable CPU kernel (DAL_PORTABLE=1)"
  DAL_PORTABLE=1 .venv-test/bin/python -m pytest tests/ops/test_sobel.py tests/ops/test_contract.py -k sobel
else
  echo "== the Sobel tests ran on the portable CPU kernel (this CPU has no AVX-512): no second run"
fi
