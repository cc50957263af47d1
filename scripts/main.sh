#!/usr/bin/env bash
# The README's main-job command: a virtual environment .venv with dal built for the CPU, then the
# op benchmarks, each side by side with the peers a user would otherwise call.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-venv.sh .venv
.venv/bin/python -m pytest benchmarks/ --benchmark-only --benchmark-columns=min,median,rounds "$@"
