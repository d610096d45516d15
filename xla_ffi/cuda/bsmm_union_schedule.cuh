// The schedule of the large-batch union kernel (bsmm_union_panel_kernel.cuh): one CTA owns a
// 128-row x 128-column output tile, that is 128 / bs adjacent block-columns, and walks the union
// of their block-rows instead of one column's blocks.
//
// Why: the one-column kernel (bsmm_tensor_core_kernel.cuh) copies a 128-row x bs tile of `a`
// from L2 once per block of its column, so every x tile is fetched once per block-column that
// uses it, and at bs 8 its warps run one m16n8k8 per block between waits. Here each x tile is
// fetched once for all the group's columns that use it (x traffic x 0.44 at bs 8 and d = 1/8
// for random layouts).
//
// The union is built in shared memory by the CTA itself from the same (offsets, entries) table
// the one-column kernel reads, a window of 256 block-rows at a time: scatter the group's
// entries into a [block-row][column] slot table, then compact the rows that any column uses,
// in block-row order. So the layout needs no second table, and hub segments (split tables)
// work unchanged.
//
// Determinism: every output element is summed by one thread in union order. No atomics.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_UNION_SCHEDULE_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_UNION_SCHEDULE_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "blocksparse_kernels.h"
#include "bsmm_tc_common.cuh"
#include "launch_util.h"
#include "tensor_core.cuh"

namespace jbs {
namespace bsmm_tc {

// Where a thread's `mine` items go in a block-wide, thread-ordered compaction: `rank` is the
// count of items of lower threads, `total` the block's. Every thread of the kWarps warps calls
// it; `warp_counts` holds kWarps ints of shared memory. It contains a barrier (so that shared
// memory read before it may be overwritten after it) and leaves warp_counts to be read by
// every thread, so a barrier must come before the next use of warp_counts.
struct BlockRank {
  int rank;
  int total;
};

template <int kWarps>
__device__ __forceinline__ BlockRank RankAcrossBlock(int mine, int32_t* warp_counts) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  int inclusive = mine;
#pragma unroll
  for (int step = 1; step < 32; step <<= 1) {
    const int other = __shfl_up_sync(0xffffffffu, inclusive, step);
    if (lane >= step) inclusive += other;
  }
  if (lane == 31) warp_counts[warp] = inclusive;
  __syncthreads();
  BlockRank ranked{inclusive - mine, 0};
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const int count = warp_counts[w];
    if (w < warp) ranked.rank += count;
    ranked.total += count;
  }
  return ranked;
}

// Fills the union tables for block-rows [row_begin, row_begin + kWindow): slots[u][c] is the w
// block of union entry u in column c (-1: absent), union_rows[u] its block-row; returns the
// number of entries. Every thread calls it; it ends with a barrier.
template <typename Tiling>
__device__ __forceinline__ int BuildUnion(const BsmmArgs& args, int64_t first_column,
                                          int64_t row_begin, int32_t* slots, int32_t* union_rows,
                                          int32_t* warp_counts) {
  constexpr int kGroup = Tiling::kGroup;
  constexpr int kWindow = Tiling::kWindow;
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t a_blocks = args.a_cols / args.block_size;
  for (int i = tid; i < kWindow * kGroup; i += Tiling::kThreads) slots[i] = -1;
  // The group's columns are consecutive in the table, so their entries are one span: bounds[c]
  // to bounds[c + 1] are column c's (empty past the last column). All G + 1 offsets are loaded
  // at once, and the span is walked in one pass: one round trip to L2, not one per column.
  int64_t bounds[kGroup + 1];
#pragma unroll
  for (int c = 0; c <= kGroup; ++c) {
    const int64_t column = min(first_column + c, args.out_blocks);
    const int64_t lowest = c == 0 ? int64_t{0} : bounds[c - 1];
    bounds[c] = min(max(static_cast<int64_t>(__ldg(args.offsets + column)), lowest), args.nnz);
  }
  __syncthreads();
  for (int64_t e = bounds[0] + tid; e < bounds[kGroup]; e += Tiling::kThreads) {
    int c = 0;
#pragma unroll
    for (int j = 1; j < kGroup; ++j) c += e >= bounds[j];
    const int2 pair = __ldg(reinterpret_cast<const int2*>(args.entries) + e);
    // A corrupt pair is dropped (a zero block), as the one-column kernel does. A valid table
    // never lists a block-row twice in one column (it comes from a mask), so each slot is
    // written at most once.
    const bool valid = pair.x >= 0 && pair.x < a_blocks && pair.y >= 0 && pair.y < args.nnz;
    const int64_t local = static_cast<int64_t>(pair.x) - row_begin;
    if (valid && local >= 0 && local < kWindow) slots[local * kGroup + c] = pair.y;
  }
  __syncthreads();
  // Compaction in block-row order, in place: each thread holds its two rows in registers
  // across the barrier, then writes them at their rank among the used rows.
  int32_t held[2][kGroup];
  int used[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = 2 * tid + h;
    used[h] = 0;
#pragma unroll
    for (int c = 0; c < kGroup; ++c) {
      held[h][c] = slots[r * kGroup + c];
      used[h] |= held[h][c] >= 0;
    }
  }
  // The barrier inside also means every thread has read its rows of slots.
  const BlockRank ranked = RankAcrossBlock<Tiling::kWarps>(used[0] + used[1], warp_counts);
  int rank = ranked.rank;
  const int total = ranked.total;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (!used[h]) continue;
#pragma unroll
    for (int c = 0; c < kGroup; ++c) slots[rank * kGroup + c] = held[h][c];
    union_rows[rank] = static_cast<int32_t>(row_begin) + 2 * tid + h;
    ++rank;
  }
  __syncthreads();
  return total;
}

// Stores a warp's 32-row x 128-column accumulator tile (2 m16 tiles x 128 / 8 n8 tiles, the
// mma's C layout) at rows [row0, row0 + 32) and block-columns [first_column, + 128 / bs) of
// group g's output, leaving out rows and block-columns past the end.
template <typename Elem, int kBs>
__device__ __forceinline__ void StoreGroupTile(const BsmmArgs& args, const float (&acc)[2][16][4],
                                               int64_t g, int64_t row0, int64_t first_column,
                                               int lane, bool out_f32) {
  constexpr int kGroup = 128 / kBs;
  constexpr int kNPerColumn = kBs / 8;
  const int64_t out_cols = args.out_blocks * kBs;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = row0 + mt * 16 + (lane >> 2) + 8 * h;
      if (row >= args.rows) continue;
#pragma unroll
      for (int c = 0; c < kGroup; ++c) {
        const int64_t column = first_column + c;
        if (column >= args.out_blocks) continue;
#pragma unroll
        for (int nt = 0; nt < kNPerColumn; ++nt) {
          const int64_t offset =
              (g * args.rows + row) * out_cols + column * kBs + nt * 8 + 2 * (lane & 3);
          const float lo = acc[mt][c * kNPerColumn + nt][2 * h];
          const float hi = acc[mt][c * kNPerColumn + nt][2 * h + 1];
          if (out_f32) {
            *reinterpret_cast<float2*>(static_cast<float*>(args.out) + offset) =
                make_float2(lo, hi);
          } else {
            *reinterpret_cast<uint32_t*>(static_cast<Elem*>(args.out) + offset) =
                tc::PackPair<Elem>(lo, hi);
          }
        }
      }
    }
}

// What a step of a union kernel sees of its CTA: the group's operands, the row tile, and the
// union tables of the current window.
template <typename Elem>
struct UnionStepContext {
  const Elem* a_group;
  const Elem* w_group;
  int64_t row0;
  int64_t rows;
  int64_t a_cols;
  const int32_t* slots;
  const int32_t* union_rows;
  int union_size;
  int tid;
  int lane;
  int m_base;
};

// The union schedule: a CTA per (group of 128 / bs block-columns, 128-row tile, group of operands), the union of the
// block-columns' block-rows built per 256-row window, Steps::Count(union size) steps through a
// Tiling::kStages cp.async ring, and the 128 x 128 tile stored at the end. Steps::Load fills a
// stage; Steps::Compute multiplies it into the accumulators. (Session 7's per-entry steps, which
// skipped absent blocks, lost to the dense panels of bsmm_union_panel_kernel.cuh: NOTES v13.)
template <class Steps>
__device__ __forceinline__ void RunUnionSchedule(const BsmmArgs& args, int64_t row_tiles,
                                                 bool out_f32) {
  using Elem = typename Steps::Elem;
  using Tiling = typename Steps::Tiling;
  constexpr int kGroup = Tiling::kGroup;
  constexpr int kStages = Tiling::kStages;
  constexpr int kBs = 128 / kGroup;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* stages = reinterpret_cast<Elem*>(smem_raw);
  int32_t* slots = reinterpret_cast<int32_t*>(smem_raw + Tiling::kStageBytes);
  int32_t* union_rows = slots + Tiling::kWindow * kGroup;
  int32_t* warp_counts = union_rows + Tiling::kWindow;

  const Elem* __restrict__ a = static_cast<const Elem*>(args.a);
  const Elem* __restrict__ w = static_cast<const Elem*>(args.w);
  const int64_t a_blocks = args.a_cols / kBs;
  const int64_t first_column = static_cast<int64_t>(blockIdx.x) * kGroup;
  UnionStepContext<Elem> ctx;
  ctx.rows = args.rows;
  ctx.a_cols = args.a_cols;
  ctx.slots = slots;
  ctx.union_rows = union_rows;
  ctx.union_size = 0;
  ctx.tid = static_cast<int>(threadIdx.x);
  ctx.lane = ctx.tid & 31;
  ctx.m_base = (ctx.tid >> 5) * 32;
  const int windows = static_cast<int>((a_blocks + Tiling::kWindow - 1) / Tiling::kWindow);
  int built_window = -1;

  for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
    ctx.a_group = a + g * args.rows * args.a_cols;
    ctx.w_group = w + g * args.nnz * (kBs * kBs);
    for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
      ctx.row0 = tile * Tiling::kTM;
      float acc[2][16][4];
      tc::ZeroAccumulators(acc);

      for (int window = 0; window < windows; ++window) {
        if (window != built_window) {  // one window: built once per CTA
          ctx.union_size = BuildUnion<Tiling>(args, first_column,
                                              static_cast<int64_t>(window) * Tiling::kWindow,
                                              slots, union_rows, warp_counts);
          built_window = window;
        }
        const int steps = Steps::Count(ctx.union_size);
        // Steps fit in an int (at most one per block-row of the window), and 32-bit remainders
        // are cheap where the 6- and 12-stage rings' 64-bit ones are not.
        auto stage_of = [&](int step) { return stages + (step % kStages) * Tiling::kStageElems; };
        auto load = [&](int64_t step) {
          Steps::Load(ctx, static_cast<int>(step), stage_of(static_cast<int>(step)));
        };
        tc::PrimeCpAsyncRing<kStages>(steps, load);
        // Ends with a barrier: the stages and the union tables are free for what comes next.
        tc::DrainCpAsyncRing<kStages>(steps, load, [&](int64_t step) {
          Steps::Compute(ctx, static_cast<int>(step), stage_of(static_cast<int>(step)), acc);
        });
      }

      StoreGroupTile<Elem, kBs>(args, acc, g, ctx.row0 + ctx.m_base, first_column, ctx.lane,
                                out_f32);
    }
  }
}

// Launches a union-schedule kernel: one CTA per (column group, row tile, operand group), the
// last two clamped to the grid's limits (the kernel strides over the rest).
template <class Steps, typename Kernel>
cudaError_t LaunchUnionSchedule(Kernel kernel, const BsmmArgs& args, bool out_f32,
                                cudaStream_t stream) {
  using Tiling = typename Steps::Tiling;
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

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_UNION_SCHEDULE_CUH_
