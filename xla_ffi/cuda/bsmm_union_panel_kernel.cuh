// Tensor-core jbs_bsmm for large batches at bs 8 as dense panels over the union
// (benchmarks/NOTES.md v13): the union schedule of bsmm_union_schedule.cuh (a CTA owns a
// 128-row x 128-column output tile, 16 block-columns, and walks the union of their
// block-rows), where each pipeline stage holds a 32-wide k panel, four union entries, with the
// absent blocks of the group zero-filled, and every warp multiplies its 32 rows by the whole
// 32 x 128 panel with m16n8k16.
//
// Why: per union entry, a bs 8 block is one m16n8k8 per warp tile; skipping absent blocks
// (session 6's column-group steps) left a few mma per warp between two waits. Here every
// barrier buys 64 mma per warp whatever the layout, at the price of multiplying zeros (1.8x
// the useful work at d = 1/8). Measured on the H200, small bs 8 d = 1/8: 309 -> 256 us (the
// column-group steps), 493 us one column per CTA. At bs 16 it tied (188 against 181 us) and at
// bs 32 it lost (wide d = 1/4: 696 against 558), so those stay on one column per CTA; the
// tiling stays written for them, and the tall-layout and every-variant GPU tests checked it.
//
// Non-finite inputs: an Inf or NaN in x at a union block-row reaches every column of the
// group through the zero-filled blocks (0 x Inf), as in the dense product of the matrix the
// blocks describe; the one-column kernels skip absent blocks and stay finite there.
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
#include "bsmm_tc_common.cuh"
#include "bsmm_union_schedule.cuh"
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

// One step per 32-wide k panel: 32 / bs union entries side by side, absent blocks and entries
// past the union zero-filled, so that every warp multiplies a dense 32 x 128 panel.
template <MmaKind kKind, int kBs, bool kTransW>
struct UnionPanelSteps {
  using Elem = ElemOf<kKind>;
  using Tiling = UnionPanelTiling<Elem, kBs, kTransW>;
  static constexpr int kGroup = Tiling::kGroup;
  static constexpr int kEntries = Tiling::kEntriesPerPanel;
  static constexpr int kKPitch = Tiling::kKPitch;
  static constexpr int kNPitch = Tiling::kNPitch;
  static constexpr int kUnitsPerBlockRow = kBs / 8;  // 16-byte pieces of one block row

  static __device__ __forceinline__ int Count(int union_size) {
    return (union_size + kEntries - 1) / kEntries;
  }

  static __device__ __forceinline__ void Load(const UnionStepContext<Elem>& ctx, int p,
                                              Elem* a_stage) {
    Elem* w_stage = a_stage + Tiling::kAElems;
    // x: 128 rows x 4 pieces of 16 bytes (piece q: entry q / units, part q % units).
#pragma unroll
    for (int i = 0; i < Tiling::kTM * 4 / Tiling::kThreads; ++i) {
      const int copy = ctx.tid + i * Tiling::kThreads;
      const int r = copy / 4;
      const int q = copy % 4;
      const int u = p * kEntries + q / kUnitsPerBlockRow;
      const int64_t row = ctx.row0 + r;
      const bool live = row < ctx.rows && u < ctx.union_size;
      const Elem* src =
          live ? ctx.a_group + row * ctx.a_cols + static_cast<int64_t>(ctx.union_rows[u]) * kBs +
                     (q % kUnitsPerBlockRow) * 8
               : ctx.a_group;
      tc::CpAsync16(tc::SharedAddress(a_stage + r * kKPitch + q * 8), src, live);
    }
    // w: 512 pieces of 16 bytes; piece -> (union entry, column, block row, part).
#pragma unroll
    for (int i = 0; i < 512 / Tiling::kThreads; ++i) {
      const int copy = ctx.tid + i * Tiling::kThreads;
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
      const int32_t block = u < ctx.union_size ? ctx.slots[u * kGroup + c] : -1;
      const bool live = block >= 0;
      const Elem* src = live ? ctx.w_group + static_cast<int64_t>(block) * (kBs * kBs) +
                                   block_row * kBs + part * 8
                             : ctx.w_group;
      tc::CpAsync16(tc::SharedAddress(w_stage + dst), src, live);
    }
  }

  static __device__ __forceinline__ void Compute(const UnionStepContext<Elem>& ctx, int,
                                                 const Elem* a_stage, float (&acc)[2][16][4]) {
    const Elem* w_stage = a_stage + Tiling::kAElems;
#pragma unroll
    for (int kb = 0; kb < Tiling::kPanelK; kb += 16) {
      uint32_t af[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const int row = ctx.m_base + mt * 16 + (ctx.lane & 15);
        tc::LdMatrixX4(af[mt][0], af[mt][1], af[mt][2], af[mt][3],
                       tc::SharedAddress(a_stage + row * kKPitch + kb + (ctx.lane >> 4) * 8));
      }
      // Lane l addresses row (l & 7) of 8x8 matrix (l >> 3): matrices alternate the k
      // half (0-7, 8-15), then advance one n8 tile.
      const int mi = ctx.lane >> 3;
      const int rr = ctx.lane & 7;
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
  }
};

template <MmaKind kKind, int kBs, bool kTransW>
__global__ void __launch_bounds__(UnionPanelTiling<ElemOf<kKind>, kBs, kTransW>::kThreads, 2)
    BsmmUnionPanelKernel(BsmmArgs args, int64_t row_tiles, bool out_f32) {
  RunUnionSchedule<UnionPanelSteps<kKind, kBs, kTransW>>(args, row_tiles, out_f32);
}

template <MmaKind kKind, int kBs, bool kTransW>
cudaError_t LaunchUnionPanels(const BsmmArgs& args, bool out_f32, cudaStream_t stream) {
  return LaunchUnionSchedule<UnionPanelSteps<kKind, kBs, kTransW>>(
      BsmmUnionPanelKernel<kKind, kBs, kTransW>, args, out_f32, stream);
}

}  // namespace bsmm_tc
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_UNION_PANEL_KERNEL_CUH_
