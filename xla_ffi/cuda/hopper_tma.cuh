// Hopper (sm_90) bulk tensor copies: tensor maps built on the host, mbarrier-tracked TMA loads
// on the device. The device helpers compile for every architecture in the build (sm_80 too),
// but only sm_90 images contain the instructions; callers launch kernels that use them only
// where WgmmaAvailable() (launch_util.h) holds, which implies a 9.0 device.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_HOPPER_TMA_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_HOPPER_TMA_CUH_

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace jbs {
namespace tma {

// --- host ------------------------------------------------------------------------------------

// A tiled tensor map over a row-major 16-bit tensor, innermost dimension first, whose boxes
// land in shared memory swizzled by their row width: box rows of 128, 64 or 32 bytes (64, 32
// or 16 elements) with the swizzle of that width, the layouts that wgmma descriptors of the
// same swizzle read (wgmma.cuh). Out-of-bounds elements read as zero. Pure
// host encoding: no allocation, no synchronization. Returns false when the driver lacks the
// entry point or rejects the layout.
bool EncodeSwizzled(CUtensorMap* map, bool bf16, int rank, const void* base,
                    const uint64_t* dims, const uint64_t* byte_strides, const uint32_t* box);

// --- device ----------------------------------------------------------------------------------

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define JBS_TMA_DEVICE 1
#endif

__device__ __forceinline__ void MbarrierInit(uint32_t bar, uint32_t arrivals) {
#ifdef JBS_TMA_DEVICE
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
#else
  __trap();
#endif
}

// Makes mbarrier initialisation visible to the copy engine (the async proxy).
__device__ __forceinline__ void FenceMbarrierInit() {
#ifdef JBS_TMA_DEVICE
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void MbarrierArriveExpectTx(uint32_t bar, uint32_t bytes) {
#ifdef JBS_TMA_DEVICE
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
#else
  __trap();
#endif
}

// One arrival of this thread (consumers releasing a stage).
__device__ __forceinline__ void MbarrierArrive(uint32_t bar) {
#ifdef JBS_TMA_DEVICE
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#else
  __trap();
#endif
}

// Whether the barrier's phase with this parity has completed; may suspend the thread for a
// while first (mbarrier.try_wait), so callers loop on it.
__device__ __forceinline__ bool MbarrierTryWait(uint32_t bar, uint32_t parity) {
#ifdef JBS_TMA_DEVICE
  uint32_t done = 0;
  asm volatile(
      "{\n"
      ".reg .pred complete;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 complete, [%1], %2;\n"
      "selp.u32 %0, 1, 0, complete;\n"
      "}\n"
      : "=r"(done)
      : "r"(bar), "r"(parity)
      : "memory");
  return done != 0;
#else
  __trap();
  return true;
#endif
}

// Spins until the barrier's phase with this parity has completed.
__device__ __forceinline__ void MbarrierWait(uint32_t bar, uint32_t parity) {
  while (!MbarrierTryWait(bar, parity)) {
  }
}

// MbarrierWait for kernels still being measured (and the probes): after 2^34
// cycles (~10 s) it traps, so that a barrier protocol bug ends the process with a CUDA error
// instead of hanging the device until the caller's timeout. Long enough for any real wait, also
// under compute-sanitizer.
__device__ __forceinline__ void MbarrierWaitOrTrap(uint32_t bar, uint32_t parity) {
  const long long start = clock64();
  while (!MbarrierTryWait(bar, parity)) {
    if (clock64() - start > (1ll << 34)) __trap();
  }
}

// Box of `map` at coordinates (c0 innermost, c1) -> shared memory `dst`; completes `bar`'s
// transaction count by the box's bytes (zero-filled parts included).
__device__ __forceinline__ void Load2D(uint32_t dst, const CUtensorMap* map, uint32_t bar,
                                       int32_t c0, int32_t c1) {
#ifdef JBS_TMA_DEVICE
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void Load3D(uint32_t dst, const CUtensorMap* map, uint32_t bar,
                                       int32_t c0, int32_t c1, int32_t c2) {
#ifdef JBS_TMA_DEVICE
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
      : "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void Load5D(uint32_t dst, const CUtensorMap* map, uint32_t bar,
                                       int32_t c0, int32_t c1, int32_t c2, int32_t c3,
                                       int32_t c4) {
#ifdef JBS_TMA_DEVICE
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5, %6}], [%7];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4),
      "r"(bar)
      : "memory");
#else
  __trap();
#endif
}

// Load3D delivered to every CTA of the cluster named in `cta_mask` (bit r: cluster rank r), at
// the same shared-memory offset `dst` in each, completing the barrier at offset `bar` in each by
// the box's bytes. The receivers' barriers must expect them (their own expect_tx).
__device__ __forceinline__ void Load3DMulticast(uint32_t dst, const CUtensorMap* map,
                                                uint32_t bar, int32_t c0, int32_t c1,
                                                int32_t c2, uint16_t cta_mask) {
#ifdef JBS_TMA_DEVICE
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      ".multicast::cluster [%0], [%1, {%2, %3, %4}], [%5], %6;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar), "h"(cta_mask)
      : "memory");
#else
  __trap();
#endif
}

// --- clusters --------------------------------------------------------------------------------

// This CTA's rank in its cluster (0 outside a cluster launch).
__device__ __forceinline__ uint32_t ClusterCtaRank() {
#ifdef JBS_TMA_DEVICE
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
#else
  __trap();
  return 0;
#endif
}

// One arrival on the barrier at shared-memory offset `bar` of cluster CTA `rank` (this CTA's
// own included): how a consumer releases a stage that peers' multicast copies fill. The default
// semantics (release at CTA scope), as CUTLASS's cluster barriers use: `.release.cluster`
// compiles to a MEMBAR.GPU before every arrival, hundreds of cycles per stage, and the reads it
// would order are the consumers' wgmma, which their wait_group has already retired.
__device__ __forceinline__ void MbarrierArriveCluster(uint32_t bar, uint32_t rank) {
#ifdef JBS_TMA_DEVICE
  asm volatile(
      "{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n}\n" ::"r"(bar),
      "r"(rank)
      : "memory");
#else
  __trap();
#endif
}

// Every non-exited thread of the cluster: this thread's earlier writes (barrier initialisation)
// become visible to the cluster, and it waits until all the cluster's threads got here. Not
// `.aligned`: the warp-specialized roles reach it divergently.
__device__ __forceinline__ void ClusterSync() {
#ifdef JBS_TMA_DEVICE
  asm volatile("barrier.cluster.arrive.release;\n" ::: "memory");
  asm volatile("barrier.cluster.wait.acquire;\n" ::: "memory");
#else
  __trap();
#endif
}

}  // namespace tma
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_HOPPER_TMA_CUH_
