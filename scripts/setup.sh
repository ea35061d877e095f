#!/usr/bin/env bash
# Installs what is missing (Debian packages), then configures and builds fp4moe into build/.
# CUDA sources are compiled whenever nvcc is found (on PATH or in /usr/local/cuda/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v g++ >/dev/null || need+=(g++)
command -v python3 >/dev/null || need+=(python3 python3-pip)
[ -f /usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake ] || [ -f /usr/lib/aarch64-linux-gnu/cmake/GTest/GTestConfig.cmake ] \
  || need+=(libgtest-dev libgmock-dev)
command -v clang++ >/dev/null || need+=(clang)   # libFuzzer for the safetensors fuzz target (optional)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}"
fi

# Python packages for the checkpoint cross-check test (pinned; installed only when missing).
python3 -c "import numpy, safetensors" 2>/dev/null || python3 -m pip install --quiet numpy==2.2.6 safetensors==0.5.3 \
  || python3 -m pip install --quiet --break-system-packages numpy==2.2.6 safetensors==0.5.3

if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${FP4MOE_CMAKE_ARGS:-}
cmake --build build -j "$jobs"
