#!/usr/bin/env bash
# One call on the GPU machine: build, GPU test suite, benchmark, sanitizers; examples on request.
#   benchmarks/gpu_run.sh [all|test|bench|sanitize|examples|ab|abtest|profile|overhead|probe]...
#   (default: all)
# ab: seed / conv timings with each kernel experiment (JBS_CUDA_EXPERIMENT) alone against the defaults,
#     in the same build. abtest: the GPU tests and the sanitizers with all of them on. Neither is
#     part of "all"; both come first, so that a call cut short still says whether they work.
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
if [[ " $steps " == *" probe "* ]]; then
  # Device probes (benchmarks/probes/*.cu): standalone programs that measure one hardware rate.
  nvcc_bin=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  for probe in benchmarks/probes/*.cu; do
    name=$(basename "$probe" .cu)
    "$nvcc_bin" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I xla_ffi/cuda "$probe" -o "/tmp/$name" > "$out/probe_$name.log" 2>&1 &&
      timeout "${JBS_PROBE_TIMEOUT:-120}" "/tmp/$name" >> "$out/probe_$name.log" 2>&1
    echo "probe $name: exit $?"; tail -n 40 "$out/probe_$name.log"
  done
fi
(cd /tmp && python3 -c "import jax, jax_blocksparse as j; print(jax.devices(), 'cuda kernels:', j.kernels_available('cuda'), j.unavailable_reason('cuda'))")

status=0
# pytest in JBS_TEST_SHARDS processes side by side (tests/conftest.py, JBS_TEST_SHARD): the suite
# is bound by XLA compiles on the host's cores, and one process took ~620 s on an H100 (session
# 11), past the device's 10-minute call. Logs $out/<name>_<i>.log; returns the first failing
# exit (5, no test selected in a shard, is not a failure).
run_pytest_sharded() {
  local name=$1; shift
  local shards=${JBS_TEST_SHARDS:-4} pids=() i code result=0
  for ((i = 0; i < shards; ++i)); do
    (cd /tmp && JBS_TEST_SHARD=$i/$shards XLA_PYTHON_CLIENT_PREALLOCATE=false \
        timeout "${JBS_TEST_TIMEOUT:-3000}" python3 -m pytest "$@" -q -p no:cacheprovider -rfE) \
        > "$out/${name}_$i.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}"; code=$?
    echo "$name shard $i/$shards: exit $code: $(tail -n 1 "$out/${name}_$i.log")"
    grep -E "^(FAILED|ERROR)" "$out/${name}_$i.log" | head -n 10
    [[ $code -eq 0 || $code -eq 5 || $result -ne 0 ]] || result=$code
  done
  return $result
}

# Kernel experiments pending measurement: sets separated by ';', each a comma-separated list
# turned on together (experiments that route the same products need sets of their own).
# JBS_AB_EXPERIMENTS overrides.
experiment_sets=${JBS_AB_EXPERIMENTS:-}
if [[ " $steps " == *" abtest "* ]]; then
  [[ -n $experiment_sets ]] || { echo "abtest: no experiment pending; set JBS_AB_EXPERIMENTS"; exit 2; }
  # JBS_AB_PYTEST_ARGS narrows the runs (split like a shell line: -k 'a or b' stays one argument).
  eval "ab_pytest_args=(${JBS_AB_PYTEST_ARGS:-})"
  smoke_failed=0
  failed_sets=" "
  IFS=';' read -ra sets <<< "$experiment_sets"
  for experiments in "${sets[@]}"; do
    tag=${experiments//,/+}
    JBS_CUDA_EXPERIMENT=$experiments timeout 180 python3 benchmarks/sanitize_case.py > "$out/ab_smoke_$tag.log" 2>&1
    smoke=$?
    if [[ $smoke -ne 0 ]]; then
      # A kernel that never completes its barriers would hang every later step of this set.
      echo "$experiments: smoke run failed or hung (exit $smoke):"; tail -n 15 "$out/ab_smoke_$tag.log"
      smoke_failed=1; failed_sets+="$experiments "; continue
    fi
    # JBS_AB_SMOKE_ONLY=1: time first, and test only the sets worth adopting in a later call.
    [[ ${JBS_AB_SMOKE_ONLY:-0} == 1 ]] && { echo "$experiments: smoke run passed"; continue; }
    JBS_CUDA_EXPERIMENT=$experiments run_pytest_sharded "ab_tests_$tag" \
        "$repo/tests/test_gpu.py" "$repo/tests/test_products.py" "$repo/tests/test_conv.py" \
        "$repo/tests/test_split.py" -x "${ab_pytest_args[@]}"
    echo "tests with JBS_CUDA_EXPERIMENT=$experiments: exit $?"
    for tool in memcheck racecheck; do
      JBS_CUDA_EXPERIMENT=$experiments timeout "${JBS_SANITIZE_TIMEOUT:-3000}" compute-sanitizer \
          --tool $tool --error-exitcode 9 python3 benchmarks/sanitize_case.py > "$out/ab_sanitize_${tool}_$tag.log" 2>&1
      echo "$experiments, compute-sanitizer $tool exit: $? ($(grep 'SUMMARY' "$out/ab_sanitize_${tool}_$tag.log" | head -1))"
    done
  done
  # Timing a kernel that failed its smoke run would only fail or hang again: ab skips those
  # settings; the steps that run without the experiments (test, bench, ...) still run.
  [[ $smoke_failed -eq 0 ]] || { echo "ab skips:$failed_sets(smoke runs failed)"; status=3; }
fi
if [[ " $steps " == *" ab "* ]]; then
  # Each experiment alone against the defaults, on the configurations it changes:
  # experiment:configs[:layout[:XLA flags[:dtype[:ops]]]], the layout kind where it is not the
  # random one, the dtype where it is not bfloat16 (float32 runs at HIGHEST, as in bench.py), the
  # products (comma-separated) where not all. Listed in JBS_AB_SETTINGS, e.g. "'':wide name:wide
  # '':wide": the defaults first and last show the run-to-run spread. JBS_AB_BENCH_ARGS goes to
  # every bench.py run (e.g. --ops matmul), before a setting's own ops.
  [[ -n ${JBS_AB_SETTINGS:-} ]] || { echo "ab: no experiment pending; set JBS_AB_SETTINGS"; exit 2; }
  eval "ab_settings=($JBS_AB_SETTINGS)"
  for setting in "${ab_settings[@]}"; do
    IFS=: read -r name configs layout flags dtype ops <<< "$setting"
    [[ " ${failed_sets:- } " == *" $name "* && -n $name ]] && { echo "skipping $name (smoke failed)"; continue; }
    echo "JBS_CUDA_EXPERIMENT='$name' ${layout:+(layout $layout)} ${flags:+(XLA_FLAGS=$flags)} ${dtype:+($dtype)} ${ops:+($ops)}" \
        | tee -a "$out/ab_bench.log"
    XLA_FLAGS="${XLA_FLAGS:-}${flags:+ $flags}" JBS_CUDA_EXPERIMENT=$name timeout 300 \
        python3 benchmarks/bench.py --no-peers --only $configs ${JBS_AB_BENCH_ARGS:-} \
        --layout "${layout:-random}" --dtype "${dtype:-bfloat16}" ${ops:+--ops ${ops//,/ }} \
        --out "/tmp/ab_${name:-default}" 2>&1 \
        | grep -E "^(seed|wide|small|conv)|Error" | tee -a "$out/ab_bench.log"
  done
fi
if has test; then
  # from /tmp, so that the installed package (with its kernels) is imported, not the source tree
  # JBS_PYTEST_ARGS is split like a shell line, so -k 'a or b' stays one argument
  eval "pytest_args=(${JBS_PYTEST_ARGS:-})"
  test_paths=(); for path in ${JBS_TEST_PATH:-tests}; do test_paths+=("$repo/$path"); done
  run_pytest_sharded tests "${test_paths[@]}" "${pytest_args[@]}"
  code=$?
  [[ $status -ne 0 ]] || status=$code
  echo "pytest exit: $code ($(( $(date +%s) - start )) s since start)"
fi
if has bench; then
  # Straight into $out: bench.py saves after every configuration, so a call cut short by the
  # device's limit still brings back what it measured.
  timeout "${JBS_BENCH_TIMEOUT:-3000}" python3 benchmarks/bench.py --out "$out" ${JBS_BENCH_ARGS:-} 2>&1 \
      | tee "$out/bench.log" | grep -v "^  " | tail -n 60
fi
if has sanitize; then
  for tool in memcheck racecheck; do
    timeout "${JBS_SANITIZE_TIMEOUT:-3000}" compute-sanitizer --tool $tool --error-exitcode 9 python3 benchmarks/sanitize_case.py > "$out/sanitize_$tool.log" 2>&1
    echo "compute-sanitizer $tool exit: $? ($(grep -c 'SUMMARY' "$out/sanitize_$tool.log") summaries: $(grep 'SUMMARY' "$out/sanitize_$tool.log" | head -1))"
  done
fi
if [[ " $steps " == *" profile "* ]]; then
  # Nsight Compute on one launch of each benchmarked kernel; clocks left alone (device METHOD.md).
  (cd benchmarks && timeout "${JBS_PROFILE_TIMEOUT:-600}" ncu --clock-control none \
      --kernel-name regex:'BsmmTcKernel|BsmmWgmmaTmaKernel|ConvWgmmaTmaKernel|SampledWgmmaTmaKernel|BsmmUnionPanelKernel|SampledShortKernel|SampledTcKernel|SampledDenseTileKernel|ConvHaloKernel|ConvDwHaloKernel|AddSegments' \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
      --section LaunchStats --section SchedulerStats --section WarpStateStats \
      python3 profile_case.py > "$out/ncu.txt" 2>&1)
  echo "ncu exit: $? ($(grep -c 'Section: GPU Speed Of Light' "$out/ncu.txt") kernels profiled)"
fi
if [[ " $steps " == *" overhead "* ]]; then
  # Per-product cost of chains of 1 / 16 / 64 products, with and without command buffers.
  timeout "${JBS_OVERHEAD_TIMEOUT:-300}" python3 benchmarks/overhead_case.py 2>&1 | tee "$out/overhead.log"
fi
if [[ " $steps " == *" examples "* ]]; then
  # The two examples that issue 5 asks to run on the GPU; run from examples/ so that the
  # installed package (with its kernels) is imported.
  (cd examples && python3 speedup_plot.py --out "$out/speedup_gpu.png" > "$out/speedup.log" 2>&1
   grep -v "it/s\]" "$out/speedup.log" | tail -n 40)
  (cd examples && python3 small_world_lstm.py --hidden 512 --width-factor 4 --block-size 32 \
      --steps 600 --batch 64 --seq-len 128 --eval-every 100 --log-every 100 \
      --plot "$out/small_world_lstm_gpu.png" > "$out/lstm.log" 2>&1
   grep -v "it/s\]" "$out/lstm.log" | tail -n 15)
fi
exit $status
