#!/usr/bin/env bash
# Builds the GPU binaries here (nvcc, no GPU needed) and stages them in .dev/ for the device
# machine, with the commit they were built from in .dev/COMMIT (the device's copy of the
# tree may not know it). Then, there: `bash scripts/device-check.sh [steps]`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
cmake -S . -B build-cuda -G Ninja -DFP4MOE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a-real -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build-cuda -j "$(nproc 2>/dev/null || echo 2)" test_decode test_prefill bench_moe fp4moe
mkdir -p .dev
cp build-cuda/tests/gpu/test_decode build-cuda/tests/gpu/test_prefill build-cuda/bench/bench_moe build-cuda/fp4moe .dev/
c=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- . ':!.dev' || c="$c+dirty"
echo "$c" > .dev/COMMIT
echo "staged in .dev/ (commit $c)"
