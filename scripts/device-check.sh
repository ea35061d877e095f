#!/usr/bin/env bash
# Runs on the GPU machine (the `device` tool): GPU tests, compute-sanitizer, benchmarks; prints
# a short table last. Binaries are built on the developer machine by scripts/dev-build.sh and
# carried in DIR (default .dev/): test_decode, test_prefill, bench_moe, and COMMIT.
#   scripts/device-check.sh [tests|sanitize|bench-decode|bench-prefill|bench-skewed|all] ...
set -uo pipefail
DIR=${DIR:-.dev}
OUT=${OUT:-/tmp/fp4moe-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
# the commit the binaries were built from (the device's copy of .git may be older)
COMMIT=${COMMIT:-$(cat "$DIR/COMMIT" 2>/dev/null || echo unknown)}
status=0
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
for step in "${@:-all}"; do
  case "$step" in
    tests|all)
      for t in "$DIR"/test_decode "$DIR"/test_prefill; do
        [ -x "$t" ] || continue
        "$t" --gtest_brief=1 2>&1 | tee "$OUT/$(basename "$t").log" | grep -E "rel_l2|FAILED|PASSED|SKIPPED|Failure|error" | tail -80
        [ "${PIPESTATUS[0]}" = 0 ] || status=1
      done
      # the decode backend's wide kernel on every preset batch it can take (by default it takes
      # only 1..2 tokens of shapes whose output tiles do not outnumber the SMs)
      if [ -x "$DIR"/test_decode ]; then
        FP4MOE_DECODE_WIDE=64 "$DIR"/test_decode --gtest_brief=1 --gtest_filter='Models/DecodePreset.*' > "$OUT/test_decode_wide.log" 2>&1
        rc=$?
        echo "test_decode presets (FP4MOE_DECODE_WIDE=64): rc=$rc $(grep -E 'PASSED|FAILED' "$OUT/test_decode_wide.log" | head -2 | tr '\n' ' ')"
        [ $rc = 0 ] || status=1
      fi
      # the prefill backend's mma.sync path (what sm_80 runs), forced on this GPU
      if [ -x "$DIR"/test_prefill ]; then
        FP4MOE_PREFILL_MMA=sync "$DIR"/test_prefill --gtest_brief=1 > "$OUT/test_prefill_sync.log" 2>&1
        rc=$?
        echo "test_prefill (FP4MOE_PREFILL_MMA=sync): rc=$rc $(grep -E 'PASSED|FAILED' "$OUT/test_prefill_sync.log" | head -2 | tr '\n' ' ')"
        [ $rc = 0 ] || status=1
      fi ;;&
    sanitize|all)
      for t in "$DIR"/test_decode "$DIR"/test_prefill; do
        [ -x "$t" ] || continue
        f=${SAN_FILTER:-'*Small*'}
        for tool in memcheck racecheck; do
          compute-sanitizer --tool $tool --error-exitcode 9 "$t" --gtest_filter="$f" > "$OUT/$(basename "$t").$tool.log" 2>&1
          rc=$?
          echo "compute-sanitizer $tool $(basename "$t") [$f]: rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$(basename "$t").$tool.log" | tail -1)"
          [ $rc = 0 ] || status=1
        done
      done ;;&
    bench-decode|all)
      "$DIR"/bench_moe --backend decode --commit "$COMMIT" --json "$OUT/bench-decode.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench-decode.txt" ;;&
    bench-prefill|all)
      [ -x "$DIR"/bench_moe ] && "$DIR"/bench_moe --backend prefill --commit "$COMMIT" --json "$OUT/bench-prefill.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench-prefill.txt" ;;&
    bench-skewed)  # every token to the same k experts
      for b in decode prefill; do
        "$DIR"/bench_moe --backend $b --routing skewed --commit "$COMMIT" --json "$OUT/bench-$b-skewed.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench-$b-skewed.txt"
      done ;;
    *) ;;
  esac
done
# The device tool brings back at most 8 files from $OUT: the logs and the printed tables travel
# as one archive next to the JSON results.
(cd "$OUT" && files=$(ls -- *.log *.txt 2>/dev/null) && [ -n "$files" ] && tar czf logs.tgz $files && rm -f $files)
echo "device-check: $([ $status = 0 ] && echo PASSED || echo FAILED)"
exit $status
