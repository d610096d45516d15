#include "launch_util.h"

#include <cstdlib>
#include <string>

namespace jbs {
namespace {

constexpr int kMaxDevices = 64;

// One cached device attribute; 0 means not asked yet (no attribute used here can be 0).
int CachedAttribute(cudaDeviceAttr attribute, std::atomic<int> (&cache)[kMaxDevices],
                    int fallback) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    return fallback;
  }
  int value = cache[device].load(std::memory_order_relaxed);
  if (value == 0) {
    if (cudaDeviceGetAttribute(&value, attribute, device) != cudaSuccess || value <= 0) {
      return fallback;
    }
    cache[device].store(value, std::memory_order_relaxed);
  }
  return value;
}

}  // namespace

int MultiprocessorCount() {
  static std::atomic<int> cache[kMaxDevices];
  return CachedAttribute(cudaDevAttrMultiProcessorCount, cache, 132);
}

bool WgmmaAvailable() {
#if defined(JBS_BUILT_FOR_SM90A)
  static const bool switched_off = ExperimentEnabled("no_wgmma");
  if (switched_off) return false;
  static std::atomic<int> cache[kMaxDevices];  // major * 10 + minor; 0: not asked yet
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return false;
  int capability = cache[device].load(std::memory_order_relaxed);
  if (capability == 0) {
    int major = 0;
    int minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
      return false;
    }
    capability = major * 10 + minor;
    cache[device].store(capability, std::memory_order_relaxed);
  }
  return capability == 90;
#else
  return false;
#endif
}

cudaError_t OptInSharedMemory(const void* kernel, int bytes,
                              std::atomic<uint64_t>& done_devices) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const uint64_t bit = device < kMaxDevices ? uint64_t{1} << device : 0;
  if (bit != 0 && (done_devices.load(std::memory_order_relaxed) & bit)) return cudaSuccess;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err == cudaSuccess && bit != 0) done_devices.fetch_or(bit, std::memory_order_relaxed);
  return err;
}

bool ExperimentEnabled(std::string_view name) {
  static const std::string flags = [] {
    const char* value = std::getenv("JBS_CUDA_EXPERIMENT");
    return std::string(value ? value : "");
  }();
  std::string_view rest = flags;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    if (rest.substr(0, comma) == name) return true;
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace jbs
