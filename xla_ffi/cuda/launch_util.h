// Per-device facts and opt-ins that the launchers need once per device, not once per call.
// Host only; each answer is cached per device, so a launch pays one cudaGetDevice.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_LAUNCH_UTIL_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_LAUNCH_UTIL_H_

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <string_view>

namespace jbs {

// Whether a device pointer meets the 16-byte alignment of vector and bulk copies.
inline bool Aligned16(const void* pointer) {
  return reinterpret_cast<uintptr_t>(pointer) % 16 == 0;
}

// Of the current device; 132 (an H100's count) if the runtime cannot say.
int MultiprocessorCount();

// Whether kernels that use sm_90a-only instructions (wgmma.cuh) can run on the current device:
// the build holds sm_90a SASS (CMake defines JBS_BUILT_FOR_SM90A) and the device is compute
// capability 9.0, which runs it. Elsewhere (sm_80, newer GPUs that JIT the compute_90 PTX) those
// kernels would trap. JBS_CUDA_EXPERIMENT=no_wgmma makes it false, so that a Hopper card runs
// and tests the mma.sync kernels that other cards take.
bool WgmmaAvailable();

// Raises `kernel`'s dynamic shared memory limit to `bytes` on the current device, once per
// device: the attribute belongs to the device's context, so a process that launches on several
// GPUs needs it on each. `done_devices` is the caller's per-kernel record (one bit per device).
cudaError_t OptInSharedMemory(const void* kernel, int bytes,
                              std::atomic<uint64_t>& done_devices);

// Whether JBS_CUDA_EXPERIMENT (a comma-separated list, read once per process) names `name`:
// kernel variants still being measured are compiled into every build and stay off unless named,
// so that one build can time them against the defaults (benchmarks/gpu_run.sh ab). Allocates
// nothing after the first call.
bool ExperimentEnabled(std::string_view name);

}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_LAUNCH_UTIL_H_
