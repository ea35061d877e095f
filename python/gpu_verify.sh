#!/usr/bin/env bash
# One-shot verification of the binding on a GPU machine (from the repo root): builds the
# libraries (build-py) and the extension, checks that no static libstdc++ went into it, runs a
# smoke test in its own process (CPU create, CUDA fused_moe; a native backtrace on a crash),
# then pytest; a summary last. FP4MOE_OVERLAY=<dir>: copy <dir>/ over the
# tree first (e.g. the committed kernels while others edit the working tree).
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
S=$(date +%s)
t() { echo "== [t+$(($(date +%s) - S))s] $*"; }
[ -n "$FP4MOE_OVERLAY" ] && [ -d "$FP4MOE_OVERLAY" ] && cp -r "$FP4MOE_OVERLAY"/. . && t "overlaid $FP4MOE_OVERLAY"
jobs=$(nproc 2>/dev/null || echo 4)
PY=python3
t "env"; echo "CXX=${CXX:-unset} CC=${CC:-unset}"; file -L "$(command -v ${CXX:-c++})" 2>/dev/null | cut -c1-200
[ -f /opt/gcc/bin/g++ ] && (head -c 400 /opt/gcc/bin/g++ | tr -c '[:print:]\n' '.' | head -8)
$PY -c "import sysconfig as s, torch; print('LDCXXSHARED', s.get_config_var('LDCXXSHARED')); print('torch', torch.__version__, torch.version.cuda, 'cxx11abi', torch._C._GLIBCXX_USE_CXX11_ABI)"
t "cmake"
cmake -S . -B build-py -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFP4MOE_CUDA=ON -DFP4MOE_TESTS=OFF \
  "-DCMAKE_CUDA_ARCHITECTURES=${FP4MOE_CUDA_ARCH:-90a-real}" >/dev/null || echo "CMAKE CONFIGURE FAILED"
cmake --build build-py -j "$jobs" --target fp4moe_api 2>&1 | grep -E "error|FAILED" -A3
t "extension"
rm -f python/fp4moe/_C*.so && mkdir -p build-v0 && rm -f build-v0/summary
(cd python && MAX_JOBS=$jobs $PY setup.py -q build_ext --inplace 2>&1 | grep -E "error|setup.py" -A3 | cut -c1-300)
echo "libstdc++ for CXX: $(${CXX:-c++} -print-file-name=libstdc++.so) $(${CXX:-c++} -print-file-name=libstdc++.a)"
echo "static libstdc++ pieces in the extension (want 0): $(nm -D --defined-only python/fp4moe/_C*.so | grep -c _ZNSo9_M_insertIlEERSoT_)" | tee -a build-v0/summary
cat > build-v0/smoke.py <<'PY'
import sys, torch, fp4moe
sys.path.insert(0, "python/tests")
import test_fp4moe as T
def maps():
    return sorted({l.split()[-1] for l in open("/proc/self/maps") if "cudart" in l or "libstdc++" in l or "fp4moe" in l})
print("fp4moe from", fp4moe.__file__); print("loaded:", *maps(), sep="\n  ")
L = T.make_layer(8, 256, 128, "silu", "none", "cpu")
x, ids, wts = T.make_inputs(3, 256, 8, 2, "cpu")
m = fp4moe.NvFp4MoE(*T.layer_args(L), max_tokens=16, topk=2)
print("SMOKE cpu create ok:", m.backend(), "rel", T.rel_l2(m(x, ids, wts), T.reference(x, ids, wts, L, "silu", "none")))
L = T.make_layer(8, 256, 128, "silu", "none", "cuda")
x, ids, wts = T.make_inputs(5, 256, 8, 2, "cuda")
y = fp4moe.fused_moe(x, ids, wts, *T.layer_args(L)); torch.cuda.synchronize()
print("SMOKE cuda fused_moe ok: rel", T.rel_l2(y, T.reference(x, ids, wts, L, "silu", "none")))
PY
for v in ext:python; do
  t "smoke ${v%%:*}"
  FP4MOE_LOG_LEVEL=warn FP4MOE_SEGV_BACKTRACE=1 PYTHONPATH=${v#*:} timeout 60 $PY build-v0/smoke.py 2>&1 | c++filt | tail -45
  echo "smoke ${v%%:*} exit ${PIPESTATUS[0]}" | tee -a build-v0/summary
done
t "pytest"
FP4MOE_LOG_LEVEL=warn PYTHONPATH=python timeout ${PYTEST_TIMEOUT:-150} $PY -X faulthandler -m pytest -q -rs -p no:cacheprovider python/tests 2>&1 | tail -40 | tee build-v0/pytest.txt
echo "pytest exit ${PIPESTATUS[0]}" >> build-v0/summary
t "summary"; cat build-v0/summary; grep -E "passed|failed|error" build-v0/pytest.txt | tail -2
