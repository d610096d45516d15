// Tensor-core jbs_bsmm for large batches on sm_90a, over the union of a group of block-columns
// (experiment `wgmma_tma_union`, benchmarks/NOTES.md v19): 16-bit inputs, bs 32, matmul and
// matmul_t.
//
// Why: the one-column TMA kernel (bsmm_wgmma_tma_kernel.cuh) reads each x tile from L2 once per
// block of every column that uses it: 2.1 GB for the wide d = 1/4 product, which it moves at
// ~7.8 TB/s, so L2 and not the tensor cores bounds it. Here a CTA owns 128 rows x kGroup = 8
// block-columns and walks the union of their block-rows (BuildUnion, bsmm_union_schedule.cuh),
// so each x tile is fetched once for all the group's columns that use it (d = 1/4: 0.96 GB of
// x, 0.54 GB of w blocks), and each present block costs one wgmma m64n32k16 pair per
// warpgroup. Absent blocks are neither loaded nor multiplied.
//
// Roles as in the one-column TMA kernel: a producer warp, one lane of which issues per union
// entry one box of x (32 columns x 128 rows) and one box per present w block (into the slot of
// its column), completing the stage's "full" mbarrier; two consumer warpgroups, each one m64
// slab of the rows x all 8 columns (8 x 16 accumulator floats per thread), wait on it, issue
// a wgmma pair per present block, retire the previous entry (wait_group 1) and release its
// stage on the "empty" mbarrier. The union tables are built once per CTA, by all its threads,
// before the roles split; so the kernel takes only layouts whose block-rows fit one table
// window (a_cols / 32 <= kWindow), and the caller routes the others to the one-column kernel.
//
// Determinism: every output element is summed by one thread's accumulators in union order.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_TMA_UNION_KERNEL_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_TMA_UNION_KERNEL_CUH_

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cstdint>

#include "blocksparse_kernels.h"
#include "bsmm_tc_common.cuh"
#include "bsmm_union_schedule.cuh"
#include "bsmm_wgmma_common.cuh"
#include "hopper_tma.cuh"
#include "launch_util.h"
#include "tensor_core.cuh"
#include "wgmma.cuh"

namespace jbs {
namespace bsmm_tc {

struct WgmmaTmaUnionTiling {
  static constexpr int kBs = 32;
  static constexpr int kGroup = 8;  // block-columns per CTA
  static constexpr int kConsumerThreads = 256;  // two warpgroups, one m64 slab each
  static constexpr int kThreads = kConsumerThreads + 32;  // and one producer warp
  static constexpr int kWarps = kThreads / 32;  // all of them build the union tables
  static constexpr int kTM = 128;
  static constexpr uint32_t kRowBytes = kBs * 2;                      // 64: one swizzle row
  static constexpr uint32_t kAtomBytes = 8 * kRowBytes;               // 512: one swizzle atom
  static constexpr uint32_t kABytes = kTM * kRowBytes;                // 8 KB
  static constexpr uint32_t kBBytes = kBs * kRowBytes;                // 2 KB
  static constexpr uint32_t kStageBytes = kABytes + kGroup * kBBytes; // 24 KB, 1 KB aligned
  static constexpr int kStages = 8;
  static constexpr uint32_t kAlign = 1024;
  static constexpr uint32_t kBarrierBytes = 2 * kStages * 8;
  // Union tables: BuildUnion gives each thread two block-rows of the window.
  static constexpr int kWindow = 2 * kThreads;
  static constexpr uint32_t kSlotBytes = kWindow * kGroup * 4;
  static constexpr uint32_t kUnionRowBytes = kWindow * 4;
  static constexpr uint32_t kScanBytes = kWarps * 4;
  // Dynamic shared memory is only 16-byte aligned: room to align the stages up to 1 KB.
  static constexpr int kSmemBytes = kAlign + kStages * kStageBytes + kBarrierBytes + kSlotBytes +
                                    kUnionRowBytes + kScanBytes;
  static_assert(kStageBytes % kAlign == 0 && kABytes % kAlign == 0 && kBBytes % 512 == 0,
                "aligned atoms");
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per block");
};

template <MmaKind kKind, bool kTransW>
__global__ void __launch_bounds__(WgmmaTmaUnionTiling::kThreads, 1)
    BsmmWgmmaTmaUnionKernel(BsmmArgs args, const __grid_constant__ CUtensorMap x_map,
                            const __grid_constant__ CUtensorMap w_map, int64_t row_tiles,
                            bool out_f32) {
  // Only the sm_90a image holds the kernel; the others (never launched: WgmmaAvailable) keep
  // a stub, which also keeps their compile time down.
#if JBS_WGMMA_DEVICE
  using Elem = ElemOf<kKind>;
  using Tiling = WgmmaTmaUnionTiling;
  constexpr int kBs = Tiling::kBs;
  constexpr int kGroup = Tiling::kGroup;
  constexpr int kStages = Tiling::kStages;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw_base = tc::SharedAddress(smem_raw);
  const uint32_t smem_base = (raw_base + Tiling::kAlign - 1) & ~(Tiling::kAlign - 1);
  const uint32_t full_barriers = smem_base + kStages * Tiling::kStageBytes;
  const uint32_t empty_barriers = full_barriers + kStages * 8;
  unsigned char* tables =
      smem_raw + (smem_base - raw_base) + kStages * Tiling::kStageBytes + Tiling::kBarrierBytes;
  int32_t* slots = reinterpret_cast<int32_t*>(tables);
  int32_t* union_rows = slots + Tiling::kWindow * kGroup;
  int32_t* warp_counts = union_rows + Tiling::kWindow;

  const int tid = static_cast<int>(threadIdx.x);
  const int warpgroup = tid / 128;
  const int warp = (tid % 128) / 32;
  const int lane = tid & 31;
  const int64_t first_column = static_cast<int64_t>(blockIdx.x) * kGroup;

  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      tma::MbarrierInit(full_barriers + 8 * s, 1);
      tma::MbarrierInit(empty_barriers + 8 * s, Tiling::kConsumerThreads);
    }
    tma::FenceMbarrierInit();
  }
  // One window covers every block-row (the launcher's condition); BuildUnion's barriers also
  // publish the mbarriers' initialisation. The roles never meet at a CTA barrier again.
  const int steps = BuildUnion<Tiling>(args, first_column, 0, slots, union_rows, warp_counts);

  if (tid >= Tiling::kConsumerThreads) {
    // Producer warp, one lane: every union entry of every tile, in the consumers' order, up to
    // kStages ahead of them. Step j waits for the consumers' release of step j - kStages.
    if (lane != 0) return;
    int64_t step = 0;
    for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
      for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
        for (int u = 0; u < steps; ++u, ++step) {
          const int stage = static_cast<int>(step % kStages);
          if (step >= kStages) {
            tma::MbarrierWait(empty_barriers + 8 * stage,
                              static_cast<uint32_t>(((step - kStages) / kStages) & 1));
          }
          int32_t blocks[kGroup];
          uint32_t bytes = Tiling::kABytes;
#pragma unroll
          for (int c = 0; c < kGroup; ++c) {
            blocks[c] = slots[u * kGroup + c];
            if (blocks[c] >= 0) bytes += Tiling::kBBytes;
          }
          const uint32_t full = full_barriers + 8 * stage;
          const uint32_t a_dst = smem_base + stage * Tiling::kStageBytes;
          tma::MbarrierArriveExpectTx(full, bytes);
          tma::Load3D(a_dst, &x_map, full, union_rows[u] * kBs,
                      static_cast<int32_t>(tile * Tiling::kTM), static_cast<int32_t>(g));
#pragma unroll
          for (int c = 0; c < kGroup; ++c) {
            if (blocks[c] < 0) continue;  // absent: never multiplied, its slot left stale
            tma::Load3D(a_dst + Tiling::kABytes + c * Tiling::kBBytes, &w_map, full, 0,
                        blocks[c] * kBs, static_cast<int32_t>(g));
          }
        }
      }
    }
    return;
  }

  // Descriptor strides (wgmma.cuh, DescriptorSwizzled64): x and a w block stored [n][k]
  // (matmul_t) are K-major, a k16 step 32 bytes into the atom; a block stored [k][n] (matmul) is
  // MN-major, a k16 step two atoms.
  constexpr uint32_t kAStep = 32;
  constexpr uint32_t kBStep = kTransW ? 32 : 2 * Tiling::kAtomBytes;
  constexpr uint32_t kBLeading = kTransW ? 16 : Tiling::kBBytes;
  const uint32_t slab = warpgroup * 64 * Tiling::kRowBytes;

  int64_t base = 0;  // global number of this CTA's first step in the current tile
  for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
    for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
      const int64_t row0 = tile * Tiling::kTM;
      float acc[kGroup][16];
#pragma unroll
      for (int c = 0; c < kGroup; ++c)
#pragma unroll
        for (int i = 0; i < 16; ++i) acc[c][i] = 0.0f;

      for (int u = 0; u < steps; ++u) {
        const int64_t step = base + u;
        const int stage = static_cast<int>(step % kStages);
        // Which columns hold a block at this entry: the same for every thread (every entry of
        // the union has at least one). Broadcast from lane 0 so that ptxas sees a warp-uniform
        // branch: from a per-thread value it serializes every wgmma (info C7520).
        uint32_t present = 0;
#pragma unroll
        for (int c = 0; c < kGroup; ++c) present |= (slots[u * kGroup + c] >= 0 ? 1u : 0u) << c;
        present = __shfl_sync(0xffffffffu, present, 0);
        tma::MbarrierWait(full_barriers + 8 * stage, static_cast<uint32_t>((step / kStages) & 1));
        const uint32_t a_slab = smem_base + stage * Tiling::kStageBytes + slab;
        const uint32_t b_stage = smem_base + stage * Tiling::kStageBytes + Tiling::kABytes;
#pragma unroll
        for (int c = 0; c < kGroup; ++c) wg::FenceAccumulators(acc[c]);
        wg::WgmmaFence();
        // One commit group per present column: ptxas ends a hardware batch at every branch
        // anyway, and a single commit after the branches would become a batch of its own that
        // a wait_group 1 leaves pending while it retires this entry's wgmma too. Waiting for
        // "at most this entry's group count pending" retires exactly entry u - 1.
#pragma unroll
        for (int c = 0; c < kGroup; ++c) {
          if (!(present >> c & 1u)) continue;
#pragma unroll
          for (int k16 = 0; k16 < kBs / 16; ++k16) {
            wg::Wgmma64x32x16<Elem, kTransW ? 0 : 1>(
                acc[c],
                wg::DescriptorSwizzled64(a_slab + k16 * kAStep, 16, Tiling::kAtomBytes),
                wg::DescriptorSwizzled64(b_stage + c * Tiling::kBBytes + k16 * kBStep,
                                         kBLeading, Tiling::kAtomBytes));
          }
          wg::WgmmaCommit();
        }
#pragma unroll
        for (int c = 0; c < kGroup; ++c) wg::FenceAccumulators(acc[c]);
        wg::WgmmaWaitAtMost(__popc(present));
        // Entry u - 1's wgmma have retired: release its stage to the producer.
        if (u >= 1) tma::MbarrierArrive(empty_barriers + 8 * static_cast<int>((step - 1) % kStages));
      }
      wg::WgmmaWait<0>();
#pragma unroll
      for (int c = 0; c < kGroup; ++c) wg::FenceAccumulators(acc[c]);
      if (steps > 0) {
        // The last entry's release, so that every consumed step is released exactly once.
        tma::MbarrierArrive(empty_barriers + 8 * static_cast<int>((base + steps - 1) % kStages));
      }
      base += steps;

#pragma unroll
      for (int c = 0; c < kGroup; ++c) {
        if (first_column + c >= args.out_blocks) continue;
        StoreWgmmaWarpTile<Elem>(args, acc[c], g, row0 + warpgroup * 64 + warp * 16,
                                 first_column + c, lane, out_f32);
      }
    }
  }
#else
  __trap();
#endif
}

// Whether the union kernel takes this product: one table window must cover the block-rows.
inline bool WgmmaTmaUnionFits(const BsmmArgs& args) {
  return args.a_cols / WgmmaTmaUnionTiling::kBs <= WgmmaTmaUnionTiling::kWindow;
}

template <MmaKind kKind, bool kTransW>
cudaError_t LaunchWgmmaTmaUnion(const BsmmArgs& args, bool out_f32, cudaStream_t stream) {
  using Tiling = WgmmaTmaUnionTiling;
  if (!WgmmaTmaUnionFits(args)) return cudaErrorNotSupported;
  static std::atomic<uint64_t> done_devices{0};
  return LaunchWgmmaTma<kKind>(BsmmWgmmaTmaUnionKernel<kKind, kTransW>, done_devices,
                               Tiling::kThreads, Tiling::kSmemBytes,
                               (args.out_blocks + Tiling::kGroup - 1) / Tiling::kGroup,
                               Tiling::kTM, args, out_f32, stream);
}

}  // namespace bsmm_tc
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_TMA_UNION_KERNEL_CUH_
