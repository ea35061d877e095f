#!/usr/bin/env bash
# Diagnostics for the binding on a GPU machine (each step runs even if an earlier one fails).
cd "$(dirname "$0")/.."
export FP4MOE_SEGV_BACKTRACE=1  # native backtrace from the extension on a crash
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
jobs=$(nproc 2>/dev/null || echo 4)
cmake -S . -B build-py -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFP4MOE_CUDA=ON -DFP4MOE_TESTS=OFF \
  "-DCMAKE_CUDA_ARCHITECTURES=${FP4MOE_CUDA_ARCH:-90a-real}" >/dev/null
grep -E "CMAKE_CXX_COMPILER:|CMAKE_BUILD_TYPE:" build-py/CMakeCache.txt
cmake --build build-py -j "$jobs" --target fp4moe_api fp4moe 2>&1 | grep -E "error|FAILED" -A3
(cd python && MAX_JOBS=$jobs python setup.py -q build_ext --inplace 2>&1 | grep -E "error" -A3)
g++ --version | head -1; /opt/gcc/bin/g++ --version 2>/dev/null | head -1
python -c "import torch; print('cxx11abi', torch._C._GLIBCXX_USE_CXX11_ABI)"
echo "== CLI, cpu-reference and cuda-decode"
./build-py/fp4moe run --tokens 4 --mode w4a16 --backend cpu-reference 2>&1 | tail -3
./build-py/fp4moe run --tokens 4 --mode both 2>&1 | tail -4
echo "== create on CPU tensors under gdb"
cat > /tmp/t.py <<'PY'
import sys; sys.path.insert(0, "python")
import torch, fp4moe
E,H,I=8,256,128
w13=torch.randint(0,256,(E,2*I,H//2),dtype=torch.uint8); w2=torch.randint(0,256,(E,H,I//2),dtype=torch.uint8)
s13=torch.ones(E,2*I,H//16).to(torch.float8_e4m3fn); s2=torch.ones(E,H,I//16).to(torch.float8_e4m3fn)
g=torch.full((E,),0.01)
m=fp4moe.NvFp4MoE(w13,s13,g,w2,s2,g.clone(),topk=2,max_tokens=16)
print("created", m.backend())
PY
if command -v gdb >/dev/null; then gdb -q -batch -ex run -ex bt -ex "info sharedlibrary" --args python -X faulthandler /tmp/t.py 2>&1 | grep -v "^\[New Thread\|^\[Thread" | head -60
else python -X faulthandler /tmp/t.py 2>&1 | tail -5; echo "(no gdb)"; fi
echo "== pytest (GPU tests)"
PYTHONPATH=python timeout 200 python -X faulthandler -m pytest -q -rs -x python/tests -k "not cpu_tensors" 2>&1 | tail -40
echo "== tune"
timeout 60 ./build-py/fp4moe tune --preset qwen3-30b-a3b --out build-py/crossover.txt 2>&1 | tail -35
