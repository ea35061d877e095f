#!/usr/bin/env bash
# The main job: set up, build, and run one MoE layer (qwen3-30b-a3b, 16 tokens) on the best
# backend here (the CPU reference when there is no GPU). Extra arguments go to `fp4moe run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ./build/fp4moe run "$@"
