#!/usr/bin/env bash
# On a GPU machine with PyTorch: build the fp4moe libraries (CUDA), the extension, run pytest,
# then `fp4moe tune` (which also measures the hybrid against both paths). Run from the repo root.
#   FP4MOE_CUDA_ARCH (default 90a-real), TUNE_PRESETS (default "qwen3-30b-a3b")
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
jobs=$(nproc 2>/dev/null || echo 4)
cmake -S . -B build-py -G Ninja -DCMAKE_BUILD_TYPE=Release -DFP4MOE_CUDA=ON -DFP4MOE_TESTS=OFF \
  "-DCMAKE_CUDA_ARCHITECTURES=${FP4MOE_CUDA_ARCH:-90a-real}" >/dev/null
cmake --build build-py -j "$jobs" --target fp4moe_api fp4moe
(cd python && MAX_JOBS=$jobs python setup.py -q build_ext --inplace)
PYTHONPATH=python python -m pytest -q -rs python/tests "$@"
for p in ${TUNE_PRESETS:-qwen3-30b-a3b}; do
  ./build-py/fp4moe tune --preset "$p" --out build-py/crossover.txt
done
./build-py/fp4moe info --preset deepseek-v3 --tokens 8 | tail -8
