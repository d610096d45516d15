#!/usr/bin/env bash
# One call on the GPU machine: build, GPU test suite, benchmark, sanitizers.
#   benchmarks/gpu_run.sh [all|test|bench|sanitize|ab]...    (default: all)
# ab: seed and conv timings with each kernel experiment alone against the default kernels, in
#     the same build (benchmarks/NOTES.md, v3). abtest: the GPU tests and the sanitizers with the
#     experiments of JBS_AB_EXPERIMENTS (default: all of them) on. Neither is part of "all".
# Logs and results land in $OUT (the device tool's folder) or /tmp/jbs_out.
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/jbs_out}
mkdir -p "$out"
steps=${*:-all}
has() { [[ " $steps " == *" all "* || " $steps " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
start=$(date +%s)
repo=$(pwd)
if ! CMAKE_ARGS="-DJBS_CUDA=ON ${JBS_CMAKE_ARGS:-}" python3 -m pip install --no-build-isolation --no-deps -v . > "$out/build.log" 2>&1; then
  tail -n 60 "$out/build.log"; exit 1
fi
echo "build: $(( $(date +%s) - start )) s"
(cd /tmp && python3 -c "import jax, jax_blocksparse as j; print(jax.devices(), 'cuda kernels:', j.kernels_available('cuda'), j.unavailable_reason('cuda'))")

status=0
# timings first: they decide what the tests of a later call should cover
if [[ " $steps " == *" ab "* ]]; then
  # Each experiment alone against the defaults, on the configurations it changes.
  for setting in "":"seed conv" swizzle:seed conv_taps_outer:conv conv_halo:conv; do
    name=${setting%%:*}
    echo "JBS_CUDA_EXPERIMENT='$name'"
    JBS_CUDA_EXPERIMENT=$name python3 benchmarks/bench.py --quick --no-peers --only ${setting#*:} \
        --dtype bfloat16 --out "/tmp/ab_${name:-default}" 2>&1 | grep -E "^(seed|conv|Traceback|[A-Za-z]+Error)" \
        | tee -a "$out/ab_bench.log"
  done
fi
if has test; then
  # from /tmp, so that the installed package (with its kernels) is imported, not the source tree
  # JBS_PYTEST_ARGS is split like a shell line, so -k 'a or b' stays one argument
  eval "pytest_args=(${JBS_PYTEST_ARGS:-})"
  (cd /tmp && timeout "${JBS_TEST_TIMEOUT:-3000}" python3 -m pytest "$repo/tests" -q -p no:cacheprovider -rfE "${pytest_args[@]}") 2>&1 | tee "$out/tests.log" | tail -n 40
  status=${PIPESTATUS[0]}
  echo "pytest exit: $status ($(( $(date +%s) - start )) s since start)"
fi
if has bench; then
  python3 benchmarks/bench.py ${JBS_BENCH_ARGS:-} 2>&1 | tee "$out/bench.log" | grep -v "^  " | tail -n 60
  cp benchmarks/results/*.json "$out/" 2>/dev/null
fi
experiments=${JBS_AB_EXPERIMENTS:-swizzle,conv_taps_outer,conv_halo}
if [[ " $steps " == *" abtest "* ]]; then
  (cd /tmp && JBS_CUDA_EXPERIMENT=$experiments python3 -m pytest "$repo/tests/test_gpu.py" \
      "$repo/tests/test_conv.py" "$repo/tests/test_products.py" -q -p no:cacheprovider -rfE) \
      > "$out/ab_tests.log" 2>&1
  echo "tests with JBS_CUDA_EXPERIMENT=$experiments: $(tail -n 1 "$out/ab_tests.log")"
  grep -E "^FAILED" "$out/ab_tests.log" | head -n 10
  for tool in memcheck racecheck; do
    JBS_CUDA_EXPERIMENT=$experiments compute-sanitizer --tool $tool --error-exitcode 9 \
        python3 benchmarks/sanitize_case.py > "$out/ab_sanitize_$tool.log" 2>&1
    echo "experiments, compute-sanitizer $tool exit: $? ($(grep 'ERROR SUMMARY' "$out/ab_sanitize_$tool.log" | head -1))"
  done
fi
if has sanitize; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 python3 benchmarks/sanitize_case.py > "$out/sanitize_$tool.log" 2>&1
    echo "compute-sanitizer $tool exit: $? ($(grep -c 'ERROR SUMMARY' "$out/sanitize_$tool.log") summaries: $(grep 'ERROR SUMMARY' "$out/sanitize_$tool.log" | head -1))"
  done
fi
exit $status
