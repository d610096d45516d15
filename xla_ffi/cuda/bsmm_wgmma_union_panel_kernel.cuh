// Tensor-core jbs_bsmm for large batches on sm_90a: dense 32-wide k panels over the union of a
// group of block-columns, multiplied with wgmma m64n128k16 (experiment `wgmma_union_panels`,
// benchmarks/NOTES.md v18). 16-bit inputs, bs 8, 16 and 32, matmul and matmul_t.
//
// The schedule of bsmm_union_panel_kernel.cuh (v13): a CTA owns 128 rows x 128 columns
// (128 / bs block-columns), walks the union of their block-rows (BuildUnion) 32 / bs entries at
// a time, and each stage holds the x panel (128 rows x 32 k) and the w panel (32 k x 128 n) with
// the group's absent blocks zero-filled. v13 multiplied the zeros with mma.sync at ~270 TFLOP/s
// and lost where the union is much larger than the blocks (bs 32); here one warpgroup issues
// two m64 slabs x two k16 steps of m64n128k16 per panel, a single hardware batch per step (no
// presence branch, unlike bsmm_wgmma_union_kernel.cuh), so the ring of bsmm_wgmma_kernel.cuh
// applies: step i's wgmma stay in flight (wait_group 1) while step i + 1 waits for its copies.
//
// Shared layouts (unswizzled canonical, wgmma.cuh), each filled at byte 16 u by copy u:
//   x panel, K-major: row r, 8-k piece c at (r / 8) 512 + 128 c + 16 (r % 8) (LBO 128, SBO 512).
//   w panel of blocks stored [n][k] (matmul_t), K-major over n rows: the same.
//   w panel of blocks stored [k][n] (matmul), MN-major: k row k, 8-n piece c (0-15) at
//     (k / 8) 2048 + 128 c + 16 (k % 8) (SBO 128 between n pieces, LBO 2048 between 8-k groups).
//
// Non-finite inputs: as in v13, an Inf or NaN in x at a union block-row reaches every column of
// the group through the zero-filled blocks (0 x Inf), as in the dense product.
//
// Determinism: every output element is summed by one thread's accumulators in union order.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_UNION_PANEL_KERNEL_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_UNION_PANEL_KERNEL_CUH_

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

template <int kBs>
struct WgmmaUnionPanelTiling {
  static_assert(kBs == 8 || kBs == 16 || kBs == 32, "bs 8, 16 or 32");
  static constexpr int kTM = 128;  // two m64 slabs of one warpgroup
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kGroup = 128 / kBs;  // block-columns per CTA
  static constexpr int kPanelK = 32;
  static constexpr int kEntriesPerPanel = kPanelK / kBs;
  static constexpr int kPiecesPerBlockRow = kBs / 8;
  static constexpr uint32_t kABytes = kTM * kPanelK * 2;    // 8 KB
  static constexpr uint32_t kBBytes = kPanelK * 128 * 2;    // 8 KB
  static constexpr uint32_t kStageBytes = kABytes + kBBytes;
  static constexpr int kStages = 5;
  static constexpr int kWindow = 2 * kThreads;  // BuildUnion: two block-rows per thread
  static constexpr int kSlotBytes = kWindow * kGroup * 4;
  static constexpr int kRowBytes = kWindow * 4;
  static constexpr int kScanBytes = kWarps * 4;
  static constexpr int kSmemBytes = kStages * kStageBytes + kSlotBytes + kRowBytes + kScanBytes;
  static_assert(2 * (kSmemBytes + 1024) <= 228 * 1024, "two CTAs per SM");
};

template <MmaKind kKind, int kBs, bool kTransW>
__global__ void __launch_bounds__(WgmmaUnionPanelTiling<kBs>::kThreads, 2)
    BsmmWgmmaUnionPanelKernel(BsmmArgs args, int64_t row_tiles, bool out_f32,
                              bool fence_async_proxy) {
  // Only the sm_90a image holds the kernel; the others (never launched: WgmmaAvailable) keep
  // a stub, which also keeps their compile time down.
#if JBS_WGMMA_DEVICE
  using Elem = ElemOf<kKind>;
  using Tiling = WgmmaUnionPanelTiling<kBs>;
  constexpr int kGroup = Tiling::kGroup;
  constexpr int kStages = Tiling::kStages;
  constexpr int kEntries = Tiling::kEntriesPerPanel;
  constexpr int kUnits = Tiling::kPiecesPerBlockRow;

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
  const int warp = tid / 32;
  const int lane = tid & 31;

  // Descriptor strides (header comment).
  constexpr uint32_t kCore = 128;
  constexpr uint32_t kALeading = kCore;
  constexpr uint32_t kAStride = 4 * kCore;
  constexpr uint32_t kAStep = 2 * kCore;
  constexpr uint32_t kBLeading = kTransW ? kCore : 16 * kCore;
  constexpr uint32_t kBStride = kTransW ? 4 * kCore : kCore;
  constexpr uint32_t kBStep = kTransW ? 2 * kCore : 2 * 16 * kCore;

  const int windows = static_cast<int>((a_blocks + Tiling::kWindow - 1) / Tiling::kWindow);
  int built_window = -1;
  int union_size = 0;

  for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
    const Elem* a_group = a + g * args.a_rows * a_cols;
    const Elem* w_group = w + g * args.nnz * (kBs * kBs);
    for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
      const int64_t row0 = tile * Tiling::kTM;
      float acc[2][64];
#pragma unroll
      for (int s = 0; s < 2; ++s)
#pragma unroll
        for (int i = 0; i < 64; ++i) acc[s][i] = 0.0f;

      for (int window = 0; window < windows; ++window) {
        if (window != built_window) {  // ends with a barrier
          union_size = BuildUnion<Tiling>(args, first_column,
                                          static_cast<int64_t>(window) * Tiling::kWindow, slots,
                                          union_rows, warp_counts);
          built_window = window;
        }
        const int steps = (union_size + kEntries - 1) / kEntries;

        // Panel p -> its stage: kEntries union entries side by side, absent blocks and
        // entries past the union zero-filled.
        auto issue = [&](int64_t step) {
          const int p = static_cast<int>(step);
          const uint32_t stage = smem_base + static_cast<uint32_t>(p % kStages) *
                                                 Tiling::kStageBytes;
#pragma unroll
          for (int i = 0; i < 4; ++i) {  // x: 128 rows x 4 pieces
            const int piece = tid + i * Tiling::kThreads;
            const int r = (piece / 32) * 8 + (piece & 7);
            const int q = (piece / 8) & 3;
            const int u = p * kEntries + q / kUnits;
            const int64_t row = row0 + r;
            const bool live = row < rows && u < union_size;
            const Elem* src = live ? a_group + row * a_cols +
                                         static_cast<int64_t>(union_rows[u]) * kBs +
                                         (q % kUnits) * 8
                                   : a;
            tc::CpAsync16(stage + 16 * piece, src, live);
          }
#pragma unroll
          for (int i = 0; i < 4; ++i) {  // w: 512 pieces of the 32 x 128 panel
            const int piece = tid + i * Tiling::kThreads;
            int k, n;  // panel coordinates of the piece's first element
            if constexpr (kTransW) {
              // K-major over n rows: n row (piece / 32) 8 + piece % 8, k piece (piece / 8) % 4.
              n = (piece / 32) * 8 + (piece & 7);
              k = ((piece / 8) & 3) * 8;
            } else {
              // MN-major: k row (piece / 128) 8 + piece % 8, n piece (piece / 8) % 16.
              k = (piece / 128) * 8 + (piece & 7);
              n = ((piece / 8) & 15) * 8;
            }
            const int u = p * kEntries + k / kBs;
            const int column = n / kBs;
            const int32_t block = u < union_size ? slots[u * kGroup + column] : -1;
            const bool live = block >= 0;
            // Blocks stored [n][k] are read along k, blocks stored [k][n] along n.
            const int offset = kTransW ? (n % kBs) * kBs + (k % kBs) : (k % kBs) * kBs + (n % kBs);
            const Elem* src =
                live ? w_group + static_cast<int64_t>(block) * (kBs * kBs) + offset : w;
            tc::CpAsync16(stage + Tiling::kABytes + 16 * piece, src, live);
          }
        };

        RunWgmmaRing<kStages>(steps, fence_async_proxy, issue, [&](int64_t i) {
          const uint32_t stage = smem_base + static_cast<uint32_t>(i % kStages) *
                                                 Tiling::kStageBytes;
          const uint32_t b_panel = stage + Tiling::kABytes;
#pragma unroll
          for (int s = 0; s < 2; ++s) wg::FenceAccumulators(acc[s]);
          wg::WgmmaFence();
#pragma unroll
          for (int k16 = 0; k16 < Tiling::kPanelK / 16; ++k16) {
            const uint64_t b_descriptor =
                wg::Descriptor(b_panel + k16 * kBStep, kBLeading, kBStride);
#pragma unroll
            for (int s = 0; s < 2; ++s) {
              wg::Wgmma64x128x16<Elem, kTransW ? 0 : 1>(
                  acc[s],
                  wg::Descriptor(stage + s * 8 * kAStride + k16 * kAStep, kALeading, kAStride),
                  b_descriptor);
            }
          }
          wg::WgmmaCommit();
#pragma unroll
          for (int s = 0; s < 2; ++s) wg::FenceAccumulators(acc[s]);
        });
#pragma unroll
        for (int s = 0; s < 2; ++s) wg::FenceAccumulators(acc[s]);
        // Every copy lands and every wgmma retires before the union tables or the stages are
        // rebuilt or refilled.
        tc::CpAsyncWait<0>();
        __syncthreads();
      }

      // A slab's n8 tile j / 4 is columns 8 (j / 4) .. + 7 of the group's 128: stored as four
      // 32-column quarters of 16 floats each.
#pragma unroll
      for (int s = 0; s < 2; ++s)
#pragma unroll
        for (int quarter = 0; quarter < 4; ++quarter) {
          const int64_t column = first_column + quarter * 32 / kBs;  // the quarter's first
          if (column >= args.out_blocks) continue;
          const float(&part)[16] = *reinterpret_cast<const float(*)[16]>(&acc[s][quarter * 16]);
          StoreWgmmaWarpTile<Elem, kBs>(args, part, g, row0 + s * 64 + warp * 16, column, lane,
                                        out_f32);
        }
    }
  }
#else
  __trap();
#endif
}

template <MmaKind kKind, int kBs, bool kTransW>
cudaError_t LaunchWgmmaUnionPanels(const BsmmArgs& args, bool out_f32, cudaStream_t stream) {
  using Tiling = WgmmaUnionPanelTiling<kBs>;
  static std::atomic<uint64_t> done_devices{0};
  return LaunchWgmmaGrid(BsmmWgmmaUnionPanelKernel<kKind, kBs, kTransW>, done_devices,
                         Tiling::kThreads, Tiling::kSmemBytes,
                         (args.out_blocks + Tiling::kGroup - 1) / Tiling::kGroup, Tiling::kTM,
                         args, out_f32, stream);
}

}  // namespace bsmm_tc
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_UNION_PANEL_KERNEL_CUH_
