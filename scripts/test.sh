#!/usr/bin/env bash
# The whole test suite: set up, build (CUDA sources too when nvcc is present), run ctest.
# GPU tests are labelled `gpu` and skip with the reason printed when there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# GPU tests skip themselves (GTEST_SKIP) without a GPU; say here why, once.
echo "GPU for the tests: $(./build/fp4moe info | sed -n 's/^gpus *//p' | head -1)"
ctest --test-dir build --output-on-failure -j "$(nproc 2>/dev/null || echo 2)"
