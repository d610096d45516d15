// Tensor-core jbs_bsmm for large batches as dense panels over the union (experiment
// `union_panels`, benchmarks/NOTES.md v13): the column-group schedule of
// bsmm_column_group_kernel.cuh (a CTA owns a 128-row x 128-column output tile, 128 / bs
// block-columns, and walks the union of their block-rows), but each pipeline stage holds a
// 32-wide k panel, 32 / bs union entries, with the absent blocks of the group zero-filled, and
// every warp multiplies its 32 rows by the whole 32 x 128 panel with m16n8k16.
//
// Why: the column-group kernel measured as fast as the one-column kernel at bs 16 and slower
// at bs 32 although it moves a third less of x (NOTES v10 measured). Per barrier it does one
// union entry, ~1.5 present blocks at bs 32 / d = 1/4 and at bs 16 / d = 1/8: a few mma per warp
// between two waits. Here every barrier buys 64 mma per warp (2 k16 steps x 2 m16 x 16 n8),
// whatever the layout, at the price of multiplying zeros: the tensor work is that of a dense
// product over the union, 2.7x the useful work at bs 32 / d = 1/4, 1.3x at bs 16 / d = 1/8
// (union 66% of the block-rows), 1.8x at bs 8.
//
// Determinism: every output element is summed by one thread in union order. No atomics.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_UNION_PANEL_KERNEL_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_UNION_PANEL_KERNEL_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "blocksparse_kernels.h"
#include "bsmm_column_group_kernel.cuh"
#include "bsmm_tc_common.cuh"
#include "launch_util.h"
#include "tensor_core.cuh"

namespace jbs {
namespace bsmm_tc {

template <typename Elem, int kBs, bool kTransW>
struct UnionPanelTiling {
  static_assert(sizeof(Elem) == 2 && (kBs == 8 || kBs == 16 || kBs == 32),
                "16-bit data, bs 8, 16 or 32");
  static constexpr int kTM = 128;
  static constexpr int kWarps = 4;  // each warp: 32 rows x all 128 columns
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kGroup = 128 / kBs;
  static constexpr int kPanelK = 32;
  static constexpr int kEntriesPerPanel = kPanelK / kBs;
  // x panel [128 rows][32 k] and, per transposition, the w panel as [32 k][128 n] (blocks
  // stored [k][n], read by ldmatrix.trans over k rows) or [128 n][32 k] (stored [n][k], plain
  // ldmatrix over n rows). 16 bytes of padding per row: 80-byte rows put an ldmatrix phase's 8
  // rows in distinct banks, and so do 272-byte ones.
  static constexpr int kKPitch = kPanelK + 8;
  static constexpr int kNPitch = 128 + 8;
  static constexpr int kAElems = kTM * kKPitch;
  static constexpr int kWElems = kTransW ? 128 * kKPitch : kPanelK * kNPitch;
  static constexpr int kStageElems = kAElems + kWElems;
  static constexpr int kStages = 4;
  static constexpr int kStageBytes = kStages * kStageElems * 2;
  static constexpr int kWindow = 256;
  static constexpr int kSlotBytes = kWindow * kGroup * 4;
  static constexpr int kRowBytes = kWindow * 4;
  static constexpr int kScanBytes = kWarps * 4;
  static constexpr int kSmemBytes = kStageBytes + kSlotBytes + kRowBytes + kScanBytes;
  static_assert(kWindow == 2 * kThreads, "the compaction gives each thread two block-rows");
  static_assert(kSmemBytes <= 113 * 1024, "two CTAs per SM");
};

template <MmaKind kKind, int kBs, bool kTransW>
__global__ void __launch_bounds__(UnionPanelTiling<ElemOf<kKind>, kBs, kTransW>::kThreads, 2)
    BsmmUnionPanelKernel(BsmmArgs args, int64_t row_tiles, bool out_f32) {
  using Elem = ElemOf<kKind>;
  using Tiling = UnionPanelTiling<Elem, kBs, kTransW>;
  constexpr int kGroup = Tiling::kGroup;
  constexpr int kStages = Tiling::kStages;
  constexpr int kEntries = Tiling::kEntriesPerPanel;
  constexpr int kKPitch = Tiling::kKPitch;
  constexpr int kNPitch = Tiling::kNPitch;
  constexpr int kUnitsPerBlockRow = kBs / 8;  // 16-byte pieces of one block row

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* stages = reinterpret_cast<Elem*>(smem_raw);
  int32_t* slots = reinterpret_cast<int32_t*>(smem_raw + Tiling::kStageBytes);
  int32_t* union_rows = slots + Tiling::kWindow * kGroup;
  int32_t* warp_counts = union_rows + Tiling::kWindow;

  const Elem* __restrict__ a = static_cast<const Elem*>(args.a);
  const Elem* __restrict__ w = static_cast<const Elem*>(args.w);
  const int64_t rows = args.rows;
  const int64_t a_cols = args.a_cols;
  const int64_t a_blocks = a_cols / kBs;
  const int64_t first_column = static_cast<int64_t>(blockIdx.x) * kGroup;
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int m_base = warp * 32;
  const int windows = static_cast<int>((a_blocks + Tiling::kWindow - 1) / Tiling::kWindow);
  int union_size = 0;
  int built_window = -1;

  for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
    const Elem* a_group = a + g * rows * a_cols;
    const Elem* w_group = w + g * args.nnz * (kBs * kBs);
    for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
      const int64_t row0 = tile * Tiling::kTM;
      float acc[2][16][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 16; ++nt)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[mt][nt][c] = 0.f;

      for (int window = 0; window < windows; ++window) {
        if (window != built_window) {
          union_size = BuildUnion<Tiling>(args, first_column,
                                          static_cast<int64_t>(window) * Tiling::kWindow, slots,
                                          union_rows, warp_counts);
          built_window = window;
        }
        const int panels = (union_size + kEntries - 1) / kEntries;

        // Panel p -> stage: union entries p * kEntries + e side by side along k. Entries past
        // the union and blocks absent from a column are zero-filled, so the panel is dense.
        auto load_panel = [&](int p, int stage) {
          Elem* a_stage = stages + stage * Tiling::kStageElems;
          Elem* w_stage = a_stage + Tiling::kAElems;
          // x: 128 rows x 4 pieces of 16 bytes (piece q: entry q / units, part q % units).
#pragma unroll
          for (int i = 0; i < Tiling::kTM * 4 / Tiling::kThreads; ++i) {
            const int copy = tid + i * Tiling::kThreads;
            const int r = copy / 4;
            const int q = copy % 4;
            const int u = p * kEntries + q / kUnitsPerBlockRow;
            const int64_t row = row0 + r;
            const bool live = row < rows && u < union_size;
            const Elem* src =
                live ? a_group + row * a_cols + static_cast<int64_t>(union_rows[u]) * kBs +
                           (q % kUnitsPerBlockRow) * 8
                     : a;
            tc::CpAsync16(tc::SharedAddress(a_stage + r * kKPitch + q * 8), src, live);
          }
          // w: 512 pieces of 16 bytes; piece -> (union entry, column, block row, part).
#pragma unroll
          for (int i = 0; i < 512 / Tiling::kThreads; ++i) {
            const int copy = tid + i * Tiling::kThreads;
            int e, c, block_row, part, dst;
            if constexpr (kTransW) {
              // [128 n][32 k]: n-row copy / 4, k piece copy % 4. The block's own rows are n.
              const int n = copy / 4;
              const int q = copy % 4;
              e = q / kUnitsPerBlockRow;
              part = q % kUnitsPerBlockRow;
              c = n / kBs;
              block_row = n % kBs;
              dst = n * kKPitch + q * 8;
            } else {
              // [32 k][128 n]: k-row copy / 16, n piece copy % 16. The block's own rows are k.
              const int k = copy / 16;
              const int q = copy % 16;
              e = k / kBs;
              block_row = k % kBs;
              c = (q * 8) / kBs;
              part = q % kUnitsPerBlockRow;
              dst = k * kNPitch + q * 8;
            }
            const int u = p * kEntries + e;
            const int32_t block = u < union_size ? slots[u * kGroup + c] : -1;
            const bool live = block >= 0;
            const Elem* src = live ? w_group + static_cast<int64_t>(block) * (kBs * kBs) +
                                         block_row * kBs + part * 8
                                   : w;
            tc::CpAsync16(tc::SharedAddress(w_stage + dst), src, live);
          }
        };

        auto compute_panel = [&](int stage) {
          const Elem* a_stage = stages + stage * Tiling::kStageElems;
          const Elem* w_stage = a_stage + Tiling::kAElems;
#pragma unroll
          for (int kb = 0; kb < Tiling::kPanelK; kb += 16) {
            uint32_t af[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
              const int row = m_base + mt * 16 + (lane & 15);
              tc::LdMatrixX4(af[mt][0], af[mt][1], af[mt][2], af[mt][3],
                             tc::SharedAddress(a_stage + row * kKPitch + kb + (lane >> 4) * 8));
            }
            // Lane l addresses row (l & 7) of 8x8 matrix (l >> 3): matrices alternate the k
            // half (0-7, 8-15), then advance one n8 tile.
            const int mi = lane >> 3;
            const int rr = lane & 7;
#pragma unroll
            for (int nt = 0; nt < 16; nt += 2) {
              const int n = (nt + (mi >> 1)) * 8;
              uint32_t bf[2][2];
              if constexpr (kTransW) {
                tc::LdMatrixX4(bf[0][0], bf[0][1], bf[1][0], bf[1][1],
                               tc::SharedAddress(w_stage + (n + rr) * kKPitch + kb + (mi & 1) * 8));
              } else {
                tc::LdMatrixX4Trans(
                    bf[0][0], bf[0][1], bf[1][0], bf[1][1],
                    tc::SharedAddress(w_stage + (kb + (mi & 1) * 8 + rr) * kNPitch + n));
              }
#pragma unroll
              for (int mt = 0; mt < 2; ++mt) {
                tc::Mma16<Elem>(acc[mt][nt], af[mt], bf[0]);
                tc::Mma16<Elem>(acc[mt][nt + 1], af[mt], bf[1]);
              }
            }
          }
        };

        // The column-group kernel's pipeline, one panel per stage.
#pragma unroll
        for (int s = 0; s < kStages - 1; ++s) {
          if (s < panels) load_panel(s, s);
          tc::CpAsyncCommit();
        }
        for (int i = 0; i < panels; ++i) {
          tc::CpAsyncWait<kStages - 2>();
          __syncthreads();
          const int prefetch = i + kStages - 1;
          if (prefetch < panels) load_panel(prefetch, prefetch % kStages);
          tc::CpAsyncCommit();
          compute_panel(i % kStages);
        }
        tc::CpAsyncWait<0>();
        __syncthreads();  // the stages and the union tables are free for what comes next
      }

      StoreGroupTile<Elem, kBs>(args, acc, g, row0 + m_base, first_column, lane, out_f32);
    }
  }
}

template <MmaKind kKind, int kBs, bool kTransW>
cudaError_t LaunchUnionPanels(const BsmmArgs& args, bool out_f32, cudaStream_t stream) {
  using Tiling = UnionPanelTiling<ElemOf<kKind>, kBs, kTransW>;
  auto kernel = BsmmUnionPanelKernel<kKind, kBs, kTransW>;
  static std::atomic<uint64_t> done_devices{0};
  if (OptInSharedMemory(reinterpret_cast<const void*>(kernel), Tiling::kSmemBytes,
                        done_devices) != cudaSuccess) {
    return cudaErrorNotSupported;
  }
  const int64_t column_groups = (args.out_blocks + Tiling::kGroup - 1) / Tiling::kGroup;
  const int64_t row_tiles = (args.rows + Tiling::kTM - 1) / Tiling::kTM;
  if (column_groups > kMaxGridX) return cudaErrorNotSupported;
  const dim3 grid(static_cast<unsigned>(column_groups),
                  static_cast<unsigned>(std::min(row_tiles, kMaxGridYZ)),
                  static_cast<unsigned>(std::min(args.groups, kMaxGridYZ)));
  kernel<<<grid, Tiling::kThreads, Tiling::kSmemBytes, stream>>>(args, row_tiles, out_f32);
  return cudaSuccess;
}

}  // namespace bsmm_tc
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_UNION_PANEL_KERNEL_CUH_
