// Tensor-core jbs_bsmm for large batches on sm_90a (benchmarks/NOTES.md v17): 16-bit inputs,
// bs 32, matmul and matmul_t. One CTA owns a 256-row x 32-column tile of one output
// block-column; two warpgroups multiply with wgmma.mma_async.m64n32k16 (two m64 slabs each),
// their stages filled by the bulk tensor copy engine (TMA). The same kernel at bs 16
// (experiment `wgmma_tma_bs16`, NOTES v25) takes 32-byte box rows with the 32-byte swizzle,
// m64n16k16, and twice the stages of half the size. With x stored transposed (x^T, experiment
// `wgmma_tma_at`, NOTES v26) each m64 slab's box is bs rows of 128 bytes (64 rows of x), read
// MN-major through the 128-byte swizzle: a quarter of the box rows of bs 16, half of bs 32's,
// for the same bytes.
//
// Why: wgmma issues a 64 x 32 x 16 product per instruction and runs asynchronously, where the
// mma.sync kernels spend their issue slots on ldmatrix and m16n8k16. Fed by cp.async (every
// thread copying, waiting on its groups, fencing them to the async proxy, a CTA barrier per
// step) the same tile measured 3x slower (NOTES v15). Here one thread issues two TMA boxes per
// step (x: 32 columns x 256 rows of the entry's block-row, w: the 32 x 32 block; x^T: one x box
// per m64 slab instead), which land in
// the 64-byte swizzled layout that wgmma reads directly and complete a "full" mbarrier; the
// copies are async-proxy writes, so no proxy fence is needed. Stages are released through
// "empty" mbarriers that every consumer thread arrives on once its wgmma reading the stage
// have retired.
//
// Roles (warp-specialized): two consumer warpgroups and one producer warp, of which one lane
// issues the boxes, up to kStages steps ahead of the consumers; the roles share no CTA barrier
// after the mbarriers' initialisation. Steps are numbered across the CTA's tiles so that
// barrier phases stay consistent: step j fills stage j % kStages after the empty barrier's
// completion of step j - kStages; consumers wait for full[j % kStages] with parity
// (j / kStages) & 1, issue the step's four wgmma per warpgroup, commit, retire step j - 1
// (wait_group 1) and arrive on its empty barrier.
//
// A corrupt entry loads valid dummy boxes and its wgmma are skipped by every thread (each
// reads the entry), so it contributes nothing, as in the other kernels.
//
// Determinism: every output element is summed by one thread's accumulators in entry order.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_TMA_KERNEL_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_TMA_KERNEL_CUH_

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>

#include "blocksparse_kernels.h"
#include "bsmm_tc_common.cuh"
#include "bsmm_wgmma_common.cuh"
#include "hopper_tma.cuh"
#include "launch_util.h"
#include "tensor_core.cuh"
#include "wgmma.cuh"

namespace jbs {
namespace bsmm_tc {

template <int kBlockSize>
struct WgmmaTmaTiling {
  static_assert(kBlockSize == 16 || kBlockSize == 32, "one block row is one swizzle row");
  static constexpr int kBs = kBlockSize;
  static constexpr int kWarpGroups = 2;
  static constexpr int kConsumerThreads = 128 * kWarpGroups;
  static constexpr int kThreads = kConsumerThreads + 32;  // and one producer warp
  static constexpr int kSlabs = 2;  // m64 slabs per warpgroup
  static constexpr int kTM = 64 * kSlabs * kWarpGroups;
  static constexpr uint32_t kRowBytes = kBs * 2;                    // one swizzle row
  static constexpr uint32_t kAtomBytes = 8 * kRowBytes;             // one swizzle atom
  static constexpr uint32_t kABytes = kTM * kRowBytes;              // 16 KB at bs 32, 8 at 16
  static constexpr uint32_t kSlabABytes = 64 * kRowBytes;           // one m64 slab's share
  static constexpr uint32_t kBBytes = kBs * kRowBytes;              // 2 KB at bs 32, 512 B at 16
  static constexpr uint32_t kLoadBytes = kABytes + kBBytes;         // a step's two boxes
  static constexpr uint32_t kAlign = 1024;
  static constexpr uint32_t kStageBytes =                           // 18 KB at bs 32, 9 at 16
      (kLoadBytes + kAlign - 1) / kAlign * kAlign;
  // About 70 KB in flight per CTA either way: a bs-16 step carries half the bytes.
  static constexpr int kStages = kBs == 32 ? 4 : 8;
  static constexpr uint32_t kBarrierBytes = 2 * kStages * 8;
  // Dynamic shared memory is only 16-byte aligned: room to align the stages up to 1 KB.
  static constexpr int kSmemBytes = kAlign + kStages * kStageBytes + kBarrierBytes;
  static constexpr int kMinCtas = 3;
  static constexpr int kAccumulators = kBs / 2;  // floats per thread of an m64 x bs slab
  static_assert(kStageBytes % kAlign == 0 && kABytes % kAlign == 0, "aligned atoms");
  static_assert(kSlabABytes % 1024 == 0, "x^T slabs start on 128-byte swizzle atoms");
  static_assert(3 * (kSmemBytes + 1024) <= 228 * 1024, "3 CTAs per SM");
};

template <MmaKind kKind, bool kTransW, int kBlockSize, bool kATransposed>
__global__ void __launch_bounds__(WgmmaTmaTiling<kBlockSize>::kThreads,
                                  WgmmaTmaTiling<kBlockSize>::kMinCtas)
    BsmmWgmmaTmaKernel(BsmmArgs args, const __grid_constant__ CUtensorMap x_map,
                       const __grid_constant__ CUtensorMap w_map, int64_t row_tiles,
                       bool out_f32) {
  // Only the sm_90a image holds the kernel; the others (never launched: WgmmaAvailable) keep
  // a stub, which also keeps their compile time down.
#if JBS_WGMMA_DEVICE
  using Elem = ElemOf<kKind>;
  using Tiling = WgmmaTmaTiling<kBlockSize>;
  constexpr int kBs = Tiling::kBs;
  constexpr int kAcc = Tiling::kAccumulators;
  constexpr int kStages = Tiling::kStages;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw_base = tc::SharedAddress(smem_raw);
  const uint32_t smem_base = (raw_base + Tiling::kAlign - 1) & ~(Tiling::kAlign - 1);
  const uint32_t full_barriers = smem_base + kStages * Tiling::kStageBytes;
  const uint32_t empty_barriers = full_barriers + kStages * 8;

  const int tid = static_cast<int>(threadIdx.x);
  const int warpgroup = tid / 128;
  const int warp = (tid % 128) / 32;
  const int lane = tid & 31;

  const int64_t out_block = blockIdx.x;
  const ColumnEntries column = LoadColumnEntries<kBs>(args, out_block);
  const int64_t steps = column.count;
  const int2* entries = column.pairs;
  if (tid == 0) InitTmaRing(full_barriers, empty_barriers, kStages, Tiling::kConsumerThreads);
  __syncthreads();  // the only CTA-wide barrier: the roles never meet again

  if (tid >= Tiling::kConsumerThreads) {
    // Producer warp, one lane: every step of every tile, in the consumers' order, up to
    // kStages ahead of them. Step j waits for the consumers' release of step j - kStages.
    if (lane != 0) return;
    int64_t step = 0;
    for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
      for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
        for (int64_t i = 0; i < steps; ++i, ++step) {
          const int stage = static_cast<int>(step % kStages);
          if (step >= kStages) {
            tma::MbarrierWait(empty_barriers + 8 * stage,
                              static_cast<uint32_t>(((step - kStages) / kStages) & 1));
          }
          const int2 pair = __ldg(entries + i);
          // A corrupt entry loads valid dummy boxes; the consumers skip its wgmma.
          const bool valid = column.Valid(pair);
          const uint32_t full = full_barriers + 8 * stage;
          const uint32_t a_dst = smem_base + stage * Tiling::kStageBytes;
          if constexpr (kATransposed) {
            // x^T: per m64 slab, the entry's bs rows of k, each 64 rows of x (128 bytes). Slabs
            // wholly past the last row are not loaded (their stale rows feed only accumulator
            // rows that are never stored), so that no box lies wholly out of bounds.
            const int64_t slabs_in_bounds =
                min(static_cast<int64_t>(Tiling::kTM / 64),
                    (args.a_rows - tile * Tiling::kTM + 63) / 64);
            tma::MbarrierArriveExpectTx(
                full, static_cast<uint32_t>(slabs_in_bounds) * Tiling::kSlabABytes +
                          Tiling::kBBytes);
#pragma unroll
            for (int slab = 0; slab < Tiling::kTM / 64; ++slab) {
              if (slab >= slabs_in_bounds) break;
              tma::Load3D(a_dst + slab * Tiling::kSlabABytes, &x_map, full,
                          static_cast<int32_t>(tile * Tiling::kTM + slab * 64),
                          valid ? pair.x * kBs : 0, static_cast<int32_t>(g));
            }
          } else {
            tma::MbarrierArriveExpectTx(full, Tiling::kLoadBytes);
            tma::Load3D(a_dst, &x_map, full, valid ? pair.x * kBs : 0,
                        static_cast<int32_t>(tile * Tiling::kTM), static_cast<int32_t>(g));
          }
          tma::Load3D(a_dst + Tiling::kABytes, &w_map, full, 0, valid ? pair.y * kBs : 0,
                      static_cast<int32_t>(g));
        }
      }
    }
    return;
  }

  using Operands = WgmmaBlockOperands<kBs, kTransW>;
  // An m64 slab of the A stage at a k16 step. x^T (kATransposed): bs rows of k, 128 bytes
  // each, MN-major, a k16 step 16 of them.
  const auto a_slab_descriptor = [&](uint32_t slab_base, int k16) {
    if constexpr (kATransposed) {
      return wg::DescriptorSwizzled128(slab_base + k16 * 16 * 128, Tiling::kSlabABytes, 1024);
    } else {
      return Operands::XSlab(slab_base, k16);
    }
  };

  int64_t base = 0;  // global number of this CTA's first step in the current tile
  for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
    for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
      const int64_t row0 = tile * Tiling::kTM;
      float acc[Tiling::kSlabs][kAcc];
#pragma unroll
      for (int s = 0; s < Tiling::kSlabs; ++s)
#pragma unroll
        for (int i = 0; i < kAcc; ++i) acc[s][i] = 0.0f;

      int2 next = steps > 0 ? __ldg(entries) : make_int2(-1, -1);
      for (int64_t i = 0; i < steps; ++i) {
        const int2 pair = next;
        if (i + 1 < steps) next = __ldg(entries + i + 1);
        const int64_t step = base + i;
        const int stage = static_cast<int>(step % kStages);
        if constexpr (kATransposed) {  // not yet run on a GPU: a protocol bug traps, not hangs
          tma::MbarrierWaitOrTrap(full_barriers + 8 * stage,
                                  static_cast<uint32_t>((step / kStages) & 1));
        } else {
          tma::MbarrierWait(full_barriers + 8 * stage, static_cast<uint32_t>((step / kStages) & 1));
        }
        if (column.Valid(pair)) {  // the same for every thread
          const uint32_t a_stage = smem_base + stage * Tiling::kStageBytes;
          const uint32_t b_stage = a_stage + Tiling::kABytes;
#pragma unroll
          for (int s = 0; s < Tiling::kSlabs; ++s) wg::FenceAccumulators(acc[s]);
          wg::WgmmaFence();
#pragma unroll
          for (int k16 = 0; k16 < kBs / 16; ++k16) {
            const uint64_t b_descriptor = Operands::WBlock(b_stage, k16);
#pragma unroll
            for (int s = 0; s < Tiling::kSlabs; ++s) {
              const uint32_t slab = (warpgroup * Tiling::kSlabs + s) * Tiling::kSlabABytes;
              const uint64_t a_descriptor = a_slab_descriptor(a_stage + slab, k16);
              constexpr int kTransA = kATransposed ? 1 : 0;
              if constexpr (kBs == 32) {
                wg::Wgmma64x32x16<Elem, Operands::kTransB, kTransA>(acc[s], a_descriptor,
                                                                    b_descriptor);
              } else {
                wg::Wgmma64x16x16<Elem, Operands::kTransB, kTransA>(acc[s], a_descriptor,
                                                                    b_descriptor);
              }
            }
          }
          wg::WgmmaCommit();
#pragma unroll
          for (int s = 0; s < Tiling::kSlabs; ++s) wg::FenceAccumulators(acc[s]);
          wg::WgmmaWait<1>();
        } else {
          wg::WgmmaWait<0>();  // no group of this step: retire the previous one explicitly
        }
        // Step i - 1's wgmma have retired: release its stage to the producer.
        if (i >= 1) tma::MbarrierArrive(empty_barriers + 8 * static_cast<int>((step - 1) % kStages));
      }
      wg::WgmmaWait<0>();
#pragma unroll
      for (int s = 0; s < Tiling::kSlabs; ++s) wg::FenceAccumulators(acc[s]);
      if (steps > 0) {
        // The last step's release, so that every consumed step is released exactly once.
        tma::MbarrierArrive(empty_barriers + 8 * static_cast<int>((base + steps - 1) % kStages));
      }
      base += steps;

#pragma unroll
      for (int s = 0; s < Tiling::kSlabs; ++s) {
        StoreWgmmaWarpTile<Elem>(args, acc[s], g,
                                 row0 + (warpgroup * Tiling::kSlabs + s) * 64 + warp * 16,
                                 out_block, lane, out_f32);
      }
    }
  }
#else
  __trap();
#endif
}

// kATransposed: args.a holds x^T, (groups, a_cols, rows) (jbs_bsmm_at).
template <MmaKind kKind, bool kTransW, int kBs = 32, bool kATransposed = false>
cudaError_t LaunchWgmmaTmaRows(const BsmmArgs& args, bool out_f32, cudaStream_t stream) {
  using Tiling = WgmmaTmaTiling<kBs>;
  static std::atomic<uint64_t> done_devices{0};
  return LaunchWgmmaTma<kKind, kBs, kATransposed>(
      BsmmWgmmaTmaKernel<kKind, kTransW, kBs, kATransposed>, done_devices,
                               Tiling::kThreads, Tiling::kSmemBytes, args.out_blocks, Tiling::kTM,
                               args, out_f32, stream);
}

}  // namespace bsmm_tc
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_TMA_KERNEL_CUH_
