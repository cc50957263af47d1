#!/usr/bin/env bash
# One command for a GPU machine: builds dal against that machine's torch, runs the CUDA tests, the
# GPU benchmarks (those marked cuda in benchmarks/bench_<op>.py) and a short training run on
# synthetic tensors, and writes ONE JSON of the results, $OUT/gpu-check.json (OUT defaults to
# ./gpu-check-out).
#
#   bash scripts/gpu-check.sh               on the GPU machine; stops each step by a deadline so
#                                           that the whole run ends within DAL_GPU_CHECK_SECONDS (450)
#   bash scripts/gpu-check.sh --dry-run     anywhere: every step, without a deadline; with no GPU the
#                                           CUDA tests and benchmarks skip (no benchmark JSON), and
#                                           training takes one float32 step per model on the CPU
#   bash scripts/gpu-check.sh --make-wheels makes .whl/ (needs the network): what scripts/gpu-wheels.txt
#                                           lists, for CPython 3.12 on x86-64 Linux, carried beside
#                                           the tree to the GPU machine, which has no network
#
# The Python used is DAL_GPU_PYTHON (default python3): its torch, numpy, scipy, scikit-image, pytest
# and pytest-benchmark are used as they are, seen from a virtual environment layered over it, into
# which dal and .whl/ are installed. The CUDA kernels are built for TORCH_CUDA_ARCH_LIST, by
# default the visible GPU's architecture (9.0 without one), in DAL_BUILD_DIR (default: a folder
# removed at the end; name one to keep the objects for the next run).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
wheels=$root/.whl

if [[ ${1:-} == --make-wheels ]]; then
  rm -rf "$wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: --dest "$wheels" \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    $(grep -v '^#' scripts/gpu-wheels.txt) 2> >(grep -v "is ignored: it is neither" >&2) || exit 1
  du -sh "$wheels"
  exit 0
fi
dry_run=0
[[ ${1:-} == --dry-run ]] && dry_run=1

out=${OUT:-$root/gpu-check-out}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base_python=${DAL_GPU_PYTHON:-python3}
deadline=$((SECONDS + ${DAL_GPU_CHECK_SECONDS:-450}))
parts=()
failed=0

# step NAME CAP_SECONDS COMMAND...: runs it with its output in $work/NAME.log, stopped at CAP or
# at the deadline, whichever comes first (no limit in a dry run); records status and seconds.
step() {
  local name=$1 cap=$2 left=$((deadline - SECONDS))
  shift 2
  ((dry_run)) && cap=0
  ((!dry_run && left < cap)) && cap=$((left > 1 ? left : 1))
  if ((cap)); then echo "== $name (at most ${cap}s)"; else echo "== $name"; fi
  local start=$SECONDS status
  timeout "$cap" "$@" > "$work/$name.log" 2>&1
  status=$?
  tail -n 5 "$work/$name.log"
  printf '{"exit": %d, "seconds": %d, "timed_out": %s}\n' "$status" $((SECONDS - start)) \
    "$([[ $status == 124 ]] && echo true || echo false)" > "$work/$name.status.json"
  tail -c 4000 "$work/$name.log" > "$work/$name.tail.txt"
  parts+=("${name}_step=$work/$name.status.json" "${name}_log_tail=$work/$name.tail.txt")
  ((status == 0 || status == 5)) || failed=1  # pytest's 5: nothing ran (every case skipped)
  return "$status"
}

# A virtual environment over the base Python: its packages stay visible, ours go in the venv.
venv=$work/venv
"$base_python" -m venv --system-site-packages "$venv" || exit 1
"$base_python" -c 'import site, sys; print("\n".join(site.getsitepackages()))' \
  > "$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')/gpu-check-base.pth"
py=$venv/bin/python

if [[ -d $wheels ]]; then
  step wheels 60 "$py" -m pip install -q --no-index --find-links "$wheels" -r scripts/gpu-wheels.txt
else
  echo "== no .whl/ here (make it with: bash scripts/gpu-check.sh --make-wheels): installing nothing beside dal"
fi

arch=${TORCH_CUDA_ARCH_LIST:-$("$py" -c 'import torch
print("%d.%d" % torch.cuda.get_device_capability() if torch.cuda.is_available() else "9.0")')}
"$py" -c 'import torch, sys; print("torch", torch.__version__, "CUDA", torch.version.cuda)' > "$work/torch.txt" 2>&1
(command -v nvcc && nvcc --version | tail -n 2) > "$work/nvcc.txt" 2>&1
parts+=("torch_found=$work/torch.txt" "nvcc=$work/nvcc.txt" "arch_list_built=$work/arch.txt")
echo "$arch" > "$work/arch.txt"
export TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$(nproc) DAL_BUILD_DIR=${DAL_BUILD_DIR:-$work/build}
[[ -z ${CUDA_HOME:-} && -d /usr/local/cuda ]] && export CUDA_HOME=/usr/local/cuda
# With a GPU, the CUDA kernels must build (nvcc is not among the wheels: with nvvm it is 100 MB).
"$py" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null && export FORCE_CUDA=1
step build 240 "$py" -m pip install -v --no-index --no-deps --no-build-isolation "$root"

cd "$work"  # tests and benchmarks import the dal just built, never the source tree's
op_tests=(tests/ops tests/test_metrics.py)
op_benchmarks=(benchmarks/bench_onehot.py benchmarks/bench_sobel.py benchmarks/bench_canny.py benchmarks/bench_median.py
               benchmarks/bench_residual.py benchmarks/bench_morphology.py)
step build_tests 60 "$py" -m pytest -q -p no:cacheprovider --rootdir "$root" -c "$root/pyproject.toml" \
  --junitxml="$work/build_tests.xml" "$root/tests/ops/test_build.py" \
  "$root/tests/ops/test_sobel.py::test_avx512_magnitude_matches_the_portable_kernel_bit_for_bit" \
  "$root/tests/ops/test_sobel.py::test_cpu_kernel_follows_the_cpu_capability_and_dal_portable"
step cuda_tests 180 "$py" -m pytest -q -p no:cacheprovider --rootdir "$root" -c "$root/pyproject.toml" -m cuda \
  --junitxml="$work/cuda_tests.xml" "${op_tests[@]/#/$root/}"
step benchmarks 150 "$py" -m pytest -q -p no:cacheprovider --rootdir "$root" -c "$root/pyproject.toml" -m cuda \
  --benchmark-only --benchmark-json="$work/benchmarks.bench.json" "${op_benchmarks[@]/#/$root/}"
step train 60 "$py" "$root/scripts/gpu_check.py" train "$work/train.json"
parts+=("build_tests=$work/build_tests.xml" "cuda_tests=$work/cuda_tests.xml"
        "benchmarks=$work/benchmarks.bench.json" "train=$work/train.json")

((dry_run)) && echo true > "$work/dry_run.json" || echo false > "$work/dry_run.json"
"$py" "$root/scripts/gpu_check.py" report "$out/gpu-check.json" "dry_run=$work/dry_run.json" "${parts[@]}" || exit 1
echo "== wrote $out/gpu-check.json"
exit "$failed"
