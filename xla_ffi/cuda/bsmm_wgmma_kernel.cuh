// Tensor-core jbs_bsmm for large batches on sm_90a with wgmma (experiment `wgmma_rows`,
// benchmarks/NOTES.md v15): 16-bit inputs, bs 32, matmul and matmul_t. One CTA owns a 256-row
// x 32-column tile of one output block-column, as the 256-row mma.sync tiling does, but its
// two warpgroups multiply with wgmma.mma_async.m64n32k16 (two m64 slabs each), which issues a
// 64 x 32 x 16 product per instruction and runs asynchronously, where the mma.sync kernel
// spends its issue slots on ldmatrix and m16n8k16 and waits on each.
//
// Pipeline: a ring of kStages stages, each the 256 x 32 x tile of one entry's block-row (16 KB)
// and its 32 x 32 w block (2 KB), filled by cp.async. Step i waits for its copies, fences them
// to the async proxy, barriers, issues its four wgmma per warpgroup, then copies step
// i + kStages - 2 into the stage that step i - 2 used, and leaves step i's wgmma in flight
// (wait_group 1) while step i + 1 waits for its copies. The barrier of step i is what frees
// step i - 2's stage: by then every warpgroup has retired its wgmma of step i - 2.
//
// Shared layout (unswizzled canonical, wgmma.cuh): a tile row r, 16-byte piece c (k 8c..8c+7)
// lives at byte (r / 8) * 512 + c * 128 + (r % 8) * 16, for x (rows = M, K-major: LBO 128,
// SBO 512) and for the w block alike. A block stored [n][k] (matmul_t) is then K-major B with
// the same offsets; one stored [k][n] (matmul) is MN-major B (transpose flag 1) whose 8-n
// groups are 128 bytes apart (SBO) and 8-k groups 512 (LBO). Piece u of a stage's copy lands
// at byte 16 u: consecutive threads fill one core matrix, conflict-free.
//
// Determinism: every output element is summed by one thread's accumulators in entry order.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_KERNEL_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_KERNEL_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "blocksparse_kernels.h"
#include "bsmm_tc_common.cuh"
#include "launch_util.h"
#include "tensor_core.cuh"
#include "wgmma.cuh"

namespace jbs {
namespace bsmm_tc {

struct WgmmaRowTiling {
  static constexpr int kBs = 32;
  static constexpr int kWarpGroups = 2;
  static constexpr int kThreads = 128 * kWarpGroups;
  static constexpr int kSlabs = 2;  // m64 slabs per warpgroup
  static constexpr int kTM = 64 * kSlabs * kWarpGroups;
  static constexpr int kPieces = kBs / 8;  // 16-byte pieces per tile row
  static constexpr int kABytes = kTM * kBs * 2;
  static constexpr int kBBytes = kBs * kBs * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kStages = 4;
  static constexpr int kSmemBytes = kStages * kStageBytes;  // 72 KB: 3 CTAs per SM
  static constexpr int kMinCtas = 3;
  // Byte offsets of the canonical layout (header comment).
  static constexpr uint32_t kCoreBytes = 128;
  static constexpr uint32_t kRowGroupBytes = kPieces * kCoreBytes;  // 8 rows x 32 k
  static_assert(kTM * kPieces % kThreads == 0, "whole x copies per thread");
  static_assert(kBs * kPieces <= kThreads, "one w copy per thread at most");
};

// Byte offset, inside a stage's x tile or w block, of row r's 16-byte piece c.
__device__ __forceinline__ uint32_t CanonicalOffset(int r, int c) {
  return static_cast<uint32_t>((r >> 3) * WgmmaRowTiling::kRowGroupBytes +
                               c * WgmmaRowTiling::kCoreBytes + (r & 7) * 16);
}

// Stores a warp's 16 x 32 share of a wgmma accumulator's 32 columns (layout in wgmma.cuh: float
// j in n8 tile j / 4): rows [row_base, row_base + 16) of group g's output, columns from
// block-column `column` on (32 / kBs block-columns of kBs); rows and block-columns past the end
// are left out.
template <typename Elem, int kBs = 32>
__device__ __forceinline__ void StoreWgmmaWarpTile(const BsmmArgs& args, const float (&acc)[16],
                                                   int64_t g, int64_t row_base, int64_t column,
                                                   int lane, bool out_f32) {
  const int64_t out_cols = args.out_blocks * kBs;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t row = row_base + (lane >> 2) + 8 * h;
    if (row >= args.rows) continue;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      if (kBs < 32 && column + nt * 8 / kBs >= args.out_blocks) continue;
      const int64_t offset =
          (g * args.rows + row) * out_cols + column * kBs + nt * 8 + 2 * (lane & 3);
      const float lo = acc[nt * 4 + 2 * h];
      const float hi = acc[nt * 4 + 2 * h + 1];
      if (out_f32) {
        *reinterpret_cast<float2*>(static_cast<float*>(args.out) + offset) = make_float2(lo, hi);
      } else {
        *reinterpret_cast<uint32_t*>(static_cast<Elem*>(args.out) + offset) =
            tc::PackPair<Elem>(lo, hi);
      }
    }
  }
}

// Whether the wgmma kernels fence their cp.async writes to the async proxy before the wgmma
// read them, as the PTX memory model asks. The fence compiles to MEMBAR.ALL.CTA +
// FENCE.VIEW.ASYNC.S, and if that MEMBAR waits for the copies still in flight it cuts the
// prefetch to one step; CUTLASS's cp.async + wgmma mainloop goes without it. Experiment
// `wgmma_no_proxy_fence` drops it, to measure its cost only (NOTES v15): not for adoption
// unless the memory model is shown to allow it.
inline bool FenceAsyncProxy() {
  static const bool skip = ExperimentEnabled("wgmma_no_proxy_fence");
  return !skip;
}

// The lag-2 cp.async ring of the wgmma kernels whose step is a single hardware batch (v15, v18):
// issue(step) copies a step into its stage (step % kStages) and multiply(step) issues and
// commits its wgmma; both are called by every thread, issue in step order. Step i waits for its
// copies, fences them to the async proxy, barriers, multiplies, then copies step
// i + kStages - 2 into the stage that step i - 2 used and retires step i - 1 (wait_group 1): the
// barrier of step i is what frees step i - 2's stage, every warpgroup having retired it at the
// end of step i - 1. Ends with every wgmma retired; the caller fences its accumulators.
template <int kStages, typename Issue, typename Multiply>
__device__ __forceinline__ void RunWgmmaRing(int64_t steps, bool fence_async_proxy, Issue&& issue,
                                             Multiply&& multiply) {
  static_assert(kStages >= 3, "a stage computing, one retiring, one or more in flight");
#pragma unroll
  for (int s = 0; s < kStages - 2; ++s) {
    if (s < steps) issue(s);
    tc::CpAsyncCommit();
  }
  for (int64_t i = 0; i < steps; ++i) {
    // Committed so far: kStages - 2 + i groups; step i's is the oldest still wanted.
    tc::CpAsyncWait<kStages - 3>();
    if (fence_async_proxy) wg::FenceProxyAsyncShared();
    __syncthreads();
    multiply(i);
    if (i + kStages - 2 < steps) issue(i + kStages - 2);
    tc::CpAsyncCommit();
    wg::WgmmaWait<1>();
  }
  wg::WgmmaWait<0>();
}

// Launches a wgmma kernel that takes (args, row_tiles, out_f32, fence_async_proxy): one CTA per
// (column tile, row tile of tile_rows, operand group), the last two clamped to the grid's
// limits (the kernels stride over the rest), its shared memory opted in once per device
// (`done_devices`, the caller's per-kernel record).
template <typename Kernel>
cudaError_t LaunchWgmmaGrid(Kernel kernel, std::atomic<uint64_t>& done_devices, int threads,
                            int smem_bytes, int64_t column_tiles, int64_t tile_rows,
                            const BsmmArgs& args, bool out_f32, cudaStream_t stream) {
  if (column_tiles > kMaxGridX) return cudaErrorNotSupported;
  if (OptInSharedMemory(reinterpret_cast<const void*>(kernel), smem_bytes, done_devices) !=
      cudaSuccess) {
    return cudaErrorNotSupported;
  }
  const int64_t row_tiles = (args.rows + tile_rows - 1) / tile_rows;
  const dim3 grid(static_cast<unsigned>(column_tiles),
                  static_cast<unsigned>(std::min(row_tiles, kMaxGridYZ)),
                  static_cast<unsigned>(std::min(args.groups, kMaxGridYZ)));
  kernel<<<grid, threads, smem_bytes, stream>>>(args, row_tiles, out_f32, FenceAsyncProxy());
  return cudaSuccess;
}

template <MmaKind kKind, bool kTransW>
__global__ void __launch_bounds__(WgmmaRowTiling::kThreads, WgmmaRowTiling::kMinCtas)
    BsmmWgmmaKernel(BsmmArgs args, int64_t row_tiles, bool out_f32, bool fence_async_proxy) {
  // Only the sm_90a image holds the kernel; the others (never launched: WgmmaAvailable) keep
  // a stub, which also keeps their compile time down.
#if JBS_WGMMA_DEVICE
  using Elem = ElemOf<kKind>;
  using Tiling = WgmmaRowTiling;
  constexpr int kBs = Tiling::kBs;
  constexpr int kStages = Tiling::kStages;

  // Unswizzled descriptors need 16-byte alignment only.
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t smem_base = tc::SharedAddress(smem_raw);

  const Elem* __restrict__ a = static_cast<const Elem*>(args.a);
  const Elem* __restrict__ w = static_cast<const Elem*>(args.w);
  const int64_t rows = args.rows;
  const int64_t a_cols = args.a_cols;
  const int64_t nnz = args.nnz;
  const int64_t a_blocks = a_cols / kBs;

  const int tid = static_cast<int>(threadIdx.x);
  const int warpgroup = tid / 128;
  const int warp = (tid % 128) / 32;  // within the warpgroup
  const int lane = tid & 31;

  const int64_t out_block = blockIdx.x;
  const int64_t entry_begin =
      min(max(static_cast<int64_t>(__ldg(args.offsets + out_block)), int64_t{0}), nnz);
  const int64_t entry_end =
      min(max(static_cast<int64_t>(__ldg(args.offsets + out_block + 1)), entry_begin), nnz);
  const int64_t steps = entry_end - entry_begin;

  // Matrix-descriptor strides (wgmma.cuh): x is K-major; w is K-major when stored [n][k]
  // (matmul_t) and MN-major when stored [k][n] (matmul).
  constexpr uint32_t kALeading = Tiling::kCoreBytes;
  constexpr uint32_t kAStride = Tiling::kRowGroupBytes;
  constexpr uint32_t kBLeading = kTransW ? Tiling::kCoreBytes : Tiling::kRowGroupBytes;
  constexpr uint32_t kBStride = kTransW ? Tiling::kRowGroupBytes : Tiling::kCoreBytes;
  // Start-address advance per k16 step: two pieces (K-major) or two 8-k row groups (MN-major).
  constexpr uint32_t kAStep = 2 * Tiling::kCoreBytes;
  constexpr uint32_t kBStep = kTransW ? 2 * Tiling::kCoreBytes : 2 * Tiling::kRowGroupBytes;

  for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
    const Elem* a_group = a + g * args.a_rows * a_cols;
    const Elem* w_group = w + g * nnz * (kBs * kBs);
    for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
      const int64_t row0 = tile * Tiling::kTM;

      // Copies of step `step` into its stage. The entry is read one step ahead (`next`), so
      // that the copies do not wait on its load.
      int2 next = make_int2(-1, -1);
      if (steps > 0) next = __ldg(reinterpret_cast<const int2*>(args.entries) + entry_begin);
      auto issue = [&](int64_t step) {
        const int2 pair = next;
        if (step + 1 < steps) {
          next = __ldg(reinterpret_cast<const int2*>(args.entries) + entry_begin + step + 1);
        }
        // A corrupt pair reads nothing and contributes a zero block, as in the other kernels.
        const bool valid = pair.x >= 0 && pair.x < a_blocks && pair.y >= 0 && pair.y < nnz;
        const uint32_t stage = smem_base + static_cast<uint32_t>(step % kStages) *
                                               Tiling::kStageBytes;
#pragma unroll
        for (int i = 0; i < Tiling::kTM * Tiling::kPieces / Tiling::kThreads; ++i) {
          const int u = tid + i * Tiling::kThreads;
          const int r = (u / 32) * 8 + (u & 7);
          const int c = (u / 8) & 3;
          const int64_t row = row0 + r;
          const bool live = valid && row < rows;
          const Elem* src =
              live ? a_group + row * a_cols + static_cast<int64_t>(pair.x) * kBs + c * 8 : a;
          tc::CpAsync16(stage + CanonicalOffset(r, c), src, live);
        }
        if (tid < kBs * Tiling::kPieces) {
          const int r = (tid / 32) * 8 + (tid & 7);
          const int c = (tid / 8) & 3;
          const Elem* src =
              valid ? w_group + static_cast<int64_t>(pair.y) * (kBs * kBs) + r * kBs + c * 8 : w;
          tc::CpAsync16(stage + Tiling::kABytes + CanonicalOffset(r, c), src, valid);
        }
      };

      float acc[Tiling::kSlabs][16];
#pragma unroll
      for (int s = 0; s < Tiling::kSlabs; ++s)
#pragma unroll
        for (int i = 0; i < 16; ++i) acc[s][i] = 0.0f;

      RunWgmmaRing<kStages>(steps, fence_async_proxy, issue, [&](int64_t i) {
        const uint32_t stage = smem_base + static_cast<uint32_t>(i % kStages) *
                                               Tiling::kStageBytes;
        const uint32_t b_base = stage + Tiling::kABytes;
#pragma unroll
        for (int s = 0; s < Tiling::kSlabs; ++s) wg::FenceAccumulators(acc[s]);
        wg::WgmmaFence();
#pragma unroll
        for (int k16 = 0; k16 < kBs / 16; ++k16) {
          const uint64_t b_descriptor =
              wg::Descriptor(b_base + k16 * kBStep, kBLeading, kBStride);
#pragma unroll
          for (int s = 0; s < Tiling::kSlabs; ++s) {
            const int slab_row = (warpgroup * Tiling::kSlabs + s) * 64;
            const uint64_t a_descriptor =
                wg::Descriptor(stage + CanonicalOffset(slab_row, 0) + k16 * kAStep, kALeading,
                               kAStride);
            wg::Wgmma64x32x16<Elem, kTransW ? 0 : 1>(acc[s], a_descriptor, b_descriptor);
          }
        }
        wg::WgmmaCommit();
#pragma unroll
        for (int s = 0; s < Tiling::kSlabs; ++s) wg::FenceAccumulators(acc[s]);
      });
#pragma unroll
      for (int s = 0; s < Tiling::kSlabs; ++s) wg::FenceAccumulators(acc[s]);

#pragma unroll
      for (int s = 0; s < Tiling::kSlabs; ++s) {
        StoreWgmmaWarpTile<Elem>(args, acc[s], g,
                                 row0 + (warpgroup * Tiling::kSlabs + s) * 64 + warp * 16,
                                 out_block, lane, out_f32);
      }
      // Every copy has landed (the last groups were empty) and every wgmma retired; the
      // barrier keeps the next tile's copies out of stages another warpgroup may still read.
      tc::CpAsyncWait<0>();
      __syncthreads();
    }
  }
#else
  __trap();
#endif
}

template <MmaKind kKind, bool kTransW>
cudaError_t LaunchWgmmaRows(const BsmmArgs& args, bool out_f32, cudaStream_t stream) {
  using Tiling = WgmmaRowTiling;
  static std::atomic<uint64_t> done_devices{0};
  return LaunchWgmmaGrid(BsmmWgmmaKernel<kKind, kTransW>, done_devices, Tiling::kThreads,
                         Tiling::kSmemBytes, args.out_blocks, Tiling::kTM, args, out_f32, stream);
}

}  // namespace bsmm_tc
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_KERNEL_CUH_
