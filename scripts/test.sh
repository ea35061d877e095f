#!/usr/bin/env bash
# The whole test suite: set up, build (CUDA sources too when nvcc is present), run ctest.
# GPU tests are labelled `gpu` and skip with the reason printed when there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j "$(nproc 2>/dev/null || echo 2)"
