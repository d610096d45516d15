// Tensor-core jbs_bsmm for large batches on sm_90a: the union schedule with one wgmma per
// present block (experiment `wgmma_union`, benchmarks/NOTES.md v16). 16-bit inputs, bs 32,
// matmul and matmul_t.
//
// Why: with one block-column per CTA (bsmm_wgmma_kernel.cuh, and every mma.sync tiling), each
// x tile is read from L2 once per block of every column that uses it: 2.1 GB for the wide
// d = 1/4 product, more than the tensor cores' time at wgmma rates. Here a CTA owns 128 rows x
// kGroup = 8 block-columns (256 columns) and walks the union of their block-rows
// (BuildUnion, bsmm_union_schedule.cuh): each x tile is copied once for all the group's
// columns that use it (d = 1/4: 0.96 GB), and each present block costs two wgmma m64n32k16 per
// warpgroup. Absent blocks are neither copied nor multiplied (a branch uniform over the CTA),
// so unlike the dense union panels (v13) no work is spent on zeros.
//
// CTA: two warpgroups, each one m64 slab of the 128 rows x all 8 columns (8 x 16 accumulator
// floats per thread), 1 CTA per SM. Ring of kStages stages, each the 128 x 32 x tile of one
// union entry and the 8 w block slots, kStages - 1 entries of copies in flight. Each step
// waits for its own wgmma before its closing barrier (wait_group 0): the presence branches
// make ptxas close a hardware batch after every column, so a wait_group 1 would retire them
// all anyway (the sibling kernel's single batch per step does keep one step in flight). What
// overlaps the wgmma instead is the refill of the previous step's stage and the wait and proxy
// fence for the next step's copies; only the barrier and the presence bits do not.
//
// Determinism: every output element is summed by one thread's accumulators in union order.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_UNION_KERNEL_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_UNION_KERNEL_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "blocksparse_kernels.h"
#include "bsmm_tc_common.cuh"
#include "bsmm_union_schedule.cuh"
#include "bsmm_wgmma_kernel.cuh"
#include "launch_util.h"
#include "tensor_core.cuh"
#include "wgmma.cuh"

namespace jbs {
namespace bsmm_tc {

struct WgmmaUnionTiling {
  static constexpr int kBs = 32;
  static constexpr int kGroup = 8;  // block-columns per CTA
  static constexpr int kWarps = 8;
  static constexpr int kThreads = 32 * kWarps;  // two warpgroups
  static constexpr int kTM = 128;               // one m64 slab per warpgroup
  static constexpr int kPieces = kBs / 8;
  static constexpr int kABytes = kTM * kBs * 2;
  static constexpr int kBBytes = kBs * kBs * 2;
  static constexpr int kStageBytes = kABytes + kGroup * kBBytes;  // 24 KB
  static constexpr int kStages = 6;
  // Union tables for a window of block-rows (BuildUnion gives each thread two).
  static constexpr int kWindow = 2 * kThreads;
  static constexpr int kSlotBytes = kWindow * kGroup * 4;
  static constexpr int kRowBytes = kWindow * 4;
  static constexpr int kScanBytes = kWarps * 4;
  static constexpr int kSmemBytes = kStages * kStageBytes + kSlotBytes + kRowBytes + kScanBytes;
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per block");
  static_assert(kTM * kPieces % kThreads == 0 && kGroup * kBs * kPieces % kThreads == 0,
                "whole copies per thread");
};

template <MmaKind kKind, bool kTransW>
__global__ void __launch_bounds__(WgmmaUnionTiling::kThreads, 1)
    BsmmWgmmaUnionKernel(BsmmArgs args, int64_t row_tiles, bool out_f32,
                         bool fence_async_proxy) {
  // Only the sm_90a image holds the kernel; the others (never launched: WgmmaAvailable) keep
  // a stub, which also keeps their compile time down.
#if JBS_WGMMA_DEVICE
  using Elem = ElemOf<kKind>;
  using Tiling = WgmmaUnionTiling;
  constexpr int kBs = Tiling::kBs;
  constexpr int kGroup = Tiling::kGroup;
  constexpr int kStages = Tiling::kStages;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t smem_base = tc::SharedAddress(smem_raw);
  int32_t* slots = reinterpret_cast<int32_t*>(smem_raw + kStages * Tiling::kStageBytes);
  int32_t* union_rows = slots + Tiling::kWindow * kGroup;
  int32_t* warp_counts = union_rows + Tiling::kWindow;

  const Elem* __restrict__ a = static_cast<const Elem*>(args.a);
  const Elem* __restrict__ w = static_cast<const Elem*>(args.w);
  const int64_t rows = args.rows;
  const int64_t a_cols = args.a_cols;
  const int64_t a_blocks = a_cols / kBs;
  const int64_t first_column = static_cast<int64_t>(blockIdx.x) * kGroup;

  const int tid = static_cast<int>(threadIdx.x);
  const int warpgroup = tid / 128;
  const int warp = (tid % 128) / 32;
  const int lane = tid & 31;

  // Descriptor strides as in bsmm_wgmma_kernel.cuh.
  constexpr uint32_t kCore = WgmmaRowTiling::kCoreBytes;
  constexpr uint32_t kRowGroup = WgmmaRowTiling::kRowGroupBytes;
  constexpr uint32_t kBLeading = kTransW ? kCore : kRowGroup;
  constexpr uint32_t kBStride = kTransW ? kRowGroup : kCore;
  constexpr uint32_t kAStep = 2 * kCore;
  constexpr uint32_t kBStep = kTransW ? 2 * kCore : 2 * kRowGroup;

  const int windows = static_cast<int>((a_blocks + Tiling::kWindow - 1) / Tiling::kWindow);
  int built_window = -1;
  int union_size = 0;

  for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
    const Elem* a_group = a + g * args.a_rows * a_cols;
    const Elem* w_group = w + g * args.nnz * (kBs * kBs);
    for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
      const int64_t row0 = tile * Tiling::kTM;
      float acc[kGroup][16];
#pragma unroll
      for (int c = 0; c < kGroup; ++c)
#pragma unroll
        for (int i = 0; i < 16; ++i) acc[c][i] = 0.0f;

      for (int window = 0; window < windows; ++window) {
        if (window != built_window) {  // ends with a barrier
          union_size = BuildUnion<Tiling>(args, first_column,
                                          static_cast<int64_t>(window) * Tiling::kWindow, slots,
                                          union_rows, warp_counts);
          built_window = window;
        }
        const int steps = union_size;

        // Union entry u -> its stage: the x tile of its block-row and the present w blocks.
        auto issue = [&](int u) {
          const uint32_t stage = smem_base + static_cast<uint32_t>(u % kStages) *
                                                 Tiling::kStageBytes;
          const int64_t a_col = static_cast<int64_t>(union_rows[u]) * kBs;
#pragma unroll
          for (int i = 0; i < Tiling::kTM * Tiling::kPieces / Tiling::kThreads; ++i) {
            const int piece = tid + i * Tiling::kThreads;
            const int r = (piece / 32) * 8 + (piece & 7);
            const int c = (piece / 8) & 3;
            const int64_t row = row0 + r;
            const bool live = row < rows;
            const Elem* src = live ? a_group + row * a_cols + a_col + c * 8 : a;
            tc::CpAsync16(stage + CanonicalOffset(r, c), src, live);
          }
          constexpr int kBlockPieces = kBs * Tiling::kPieces;
#pragma unroll
          for (int i = 0; i < kGroup * kBlockPieces / Tiling::kThreads; ++i) {
            const int piece = tid + i * Tiling::kThreads;
            const int column = piece / kBlockPieces;
            const int within = piece % kBlockPieces;
            const int32_t block = slots[u * kGroup + column];
            if (block < 0) continue;  // absent: never multiplied
            const int r = (within / 32) * 8 + (within & 7);
            const int c = (within / 8) & 3;
            const Elem* src = w_group + static_cast<int64_t>(block) * (kBs * kBs) + r * kBs + c * 8;
            tc::CpAsync16(stage + Tiling::kABytes + column * Tiling::kBBytes + CanonicalOffset(r, c),
                          src, true);
          }
        };

        // Steps 0 .. kStages - 2 in flight, one commit group each; then step 0's landed.
#pragma unroll
        for (int s = 0; s < kStages - 1; ++s) {
          if (s < steps) issue(s);
          tc::CpAsyncCommit();
        }
        tc::CpAsyncWait<kStages - 2>();
        if (fence_async_proxy) wg::FenceProxyAsyncShared();
        __syncthreads();
        for (int i = 0; i < steps; ++i) {
          // Here step i's copies are visible to the async proxy and every wgmma of step i - 1
          // has retired (the barrier at the end of the previous iteration).
          const uint32_t stage = smem_base + static_cast<uint32_t>(i % kStages) *
                                                 Tiling::kStageBytes;
          const uint32_t a_slab = stage + CanonicalOffset(warpgroup * 64, 0);
          // Which columns hold a block at this entry: the same for every thread, read before
          // the fence so that nothing but the branches sits between the wgmma.
          uint32_t present = 0;
#pragma unroll
          for (int c = 0; c < kGroup; ++c) present |= (slots[i * kGroup + c] >= 0 ? 1u : 0u) << c;
#pragma unroll
          for (int c = 0; c < kGroup; ++c) wg::FenceAccumulators(acc[c]);
          wg::WgmmaFence();
#pragma unroll
          for (int c = 0; c < kGroup; ++c) {
            if (!(present >> c & 1u)) continue;
            const uint32_t b_block = stage + Tiling::kABytes + c * Tiling::kBBytes;
#pragma unroll
            for (int k16 = 0; k16 < kBs / 16; ++k16) {
              wg::Wgmma64x32x16<Elem, kTransW ? 0 : 1>(
                  acc[c], wg::Descriptor(a_slab + k16 * kAStep, kCore, kRowGroup),
                  wg::Descriptor(b_block + k16 * kBStep, kBLeading, kBStride));
            }
          }
          wg::WgmmaCommit();
#pragma unroll
          for (int c = 0; c < kGroup; ++c) wg::FenceAccumulators(acc[c]);
          // While the wgmma run: refill step i - 1's stage (retired by every warpgroup before
          // the last barrier), and wait for step i + 1's copies and fence them.
          if (i + kStages - 1 < steps) issue(i + kStages - 1);
          tc::CpAsyncCommit();
          tc::CpAsyncWait<kStages - 2>();
          if (fence_async_proxy) wg::FenceProxyAsyncShared();
          wg::WgmmaWait<0>();
#pragma unroll
          for (int c = 0; c < kGroup; ++c) wg::FenceAccumulators(acc[c]);
          __syncthreads();
        }
        // Every wgmma has retired (each step waited for its own); every copy lands before the
        // union tables or the stages are rebuilt or refilled.
        tc::CpAsyncWait<0>();
        __syncthreads();
      }

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

template <MmaKind kKind, bool kTransW>
cudaError_t LaunchWgmmaUnion(const BsmmArgs& args, bool out_f32, cudaStream_t stream) {
  using Tiling = WgmmaUnionTiling;
  static std::atomic<uint64_t> done_devices{0};
  return LaunchWgmmaGrid(BsmmWgmmaUnionKernel<kKind, kTransW>, done_devices, Tiling::kThreads,
                         Tiling::kSmemBytes,
                         (args.out_blocks + Tiling::kGroup - 1) / Tiling::kGroup, Tiling::kTM,
                         args, out_f32, stream);
}

}  // namespace bsmm_tc
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_UNION_KERNEL_CUH_
