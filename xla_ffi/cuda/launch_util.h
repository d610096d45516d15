// Per-device facts and opt-ins that the launchers need once per device, not once per call.
// Host only; each answer is cached per device, so a launch pays one cudaGetDevice.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_LAUNCH_UTIL_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_LAUNCH_UTIL_H_

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>

namespace jbs {

// Of the current device; 132 (an H100's count) if the runtime cannot say.
int MultiprocessorCount();

// Of the current device; 0 if the runtime cannot say.
int ComputeCapabilityMajor();

// Raises `kernel`'s dynamic shared memory limit to `bytes` on the current device, once per
// device: the attribute belongs to the device's context, so a process that launches on several
// GPUs needs it on each. `done_devices` is the caller's per-kernel record (one bit per device).
cudaError_t OptInSharedMemory(const void* kernel, int bytes,
                              std::atomic<uint64_t>& done_devices);

}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_LAUNCH_UTIL_H_
