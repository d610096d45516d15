// Tensor-core jbs_bsmm for large batches on sm_90a over the union of a cluster's block-columns,
// its x boxes multicast to the cluster (experiment `cluster_union`, benchmarks/NOTES.md v24):
// 16-bit inputs, bs 16 and 32, matmul and matmul_t.
//
// Why: a one-column tile (bsmm_wgmma_tma_kernel.cuh) reads an x box from L2 once per block of
// every column that uses it, and at wide d = 1/4 that is 2.37 GB, which it moves at L2's ~7 TB/s:
// on that ceiling no per-block kernel passes ~1.2x of dense (NOTES, "What x reuse can buy").
// v19 took the union of 8 columns in one CTA and lost (x read 2.2x less, but one CTA per SM of
// short entries). Here the kCluster CTAs of a thread-block cluster take kCluster adjacent
// groups of kGroup block-columns over the same row tile and all walk the union of the cluster's
// kCluster x kGroup columns; each CTA copies 1 / kCluster of every entry's x box with
// `.multicast::cluster`, so L2 serves each box once per cluster while every CTA receives all of
// it. Each CTA multiplies only its own present w blocks. With kRowCluster = 2
// (`cluster_union_2d`) the cluster also spans two row tiles: the two CTAs over the same columns
// ("column-mates") deal each entry's present w blocks between them and multicast them to both,
// so w, which the 128-row tiles read once per tile, is read once per two.
//
// Roles (warp-specialized, as in v17): kWarpGroups consumer warpgroups, one m64 slab of the
// rows x all kGroup columns each (kGroup x bs / 2 accumulator floats per thread), and one
// producer warp whose lane 0 issues, per union entry, its slice of the x box (to its
// "row-mates", the kCluster CTAs of its row tile) and its share of the present w blocks (to its
// column-mates). Barriers per stage, in every CTA:
//   full:  this CTA's own producer arrives with expect_tx of the x box's slices within the
//          rows plus all its present w blocks; the peers' copies complete bytes on it (a
//          peer's bytes may land before the expect_tx: the phase cannot end before that
//          arrival). With kRowCluster = 2 the column-mate's producer arrives too, every step,
//          so that a CTA never consumes a step its column-mate's producer has not reached (it
//          releases on that CTA's empty barrier, which would otherwise see a later step's
//          release in an earlier phase).
//   empty: one arrival per consumer warpgroup of every CTA that this CTA's copies land in (its
//          row-mates and column-mates, itself included), kReleaseTargets x kWarpGroups in all:
//          a producer refills a stage only when every CTA it writes into has retired the wgmma
//          that read it. The relation is symmetric, so each warpgroup releases on the same set:
//          lane i < kReleaseTargets of its first warp arrives on one of them once the
//          warpgroup's wait has retired the step (the wgmma that read it are the warpgroup's,
//          whole).
// Every CTA builds the same union from the layout table (BuildClusterUnion), so they agree on
// the steps without talking. A cluster barrier after the barriers' initialisation keeps peers
// from signalling them early, and one at the end keeps a CTA from leaving while a peer may
// still arrive on its barriers.
//
// Shapes: the union tables hold one window of 2 x kThreads block-rows, so layouts with more
// block-rows (a_cols / bs) go to the one-column kernels (cudaErrorNotSupported).
//
// Determinism: every output element is summed by one thread's accumulators in union order.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_CLUSTER_UNION_KERNEL_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_CLUSTER_UNION_KERNEL_CUH_

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <climits>
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

template <int kBlockSize, int kGroupColumns, int kWarpGroupCount, int kClusterCtas,
          int kRowClusterCtas>
struct ClusterUnionTiling {
  static_assert(kBlockSize == 16 || kBlockSize == 32, "one block row is one swizzle row");
  static constexpr int kBs = kBlockSize;
  static constexpr int kGroup = kGroupColumns;  // block-columns per CTA
  static constexpr int kCluster = kClusterCtas;  // CTAs along the columns: share x boxes
  static constexpr int kRowCluster = kRowClusterCtas;  // along the row tiles: share w blocks
  static_assert(kRowCluster == 1 || kRowCluster == 2, "w shared by at most two row tiles");
  static constexpr int kClusterCtasTotal = kCluster * kRowCluster;
  static_assert(kClusterCtasTotal <= 8, "a portable cluster size");
  // Each consumer warpgroup releases a stage on every CTA that writes into it: its kCluster
  // row-mates (x slices, itself included) and its kRowCluster - 1 column-mates (w blocks).
  static constexpr int kReleaseTargets = kCluster + kRowCluster - 1;
  static constexpr int kClusterColumns = kGroup * kCluster;
  static_assert(kGroup <= 32, "one own-presence bit per column");
  static constexpr int kWarpGroups = kWarpGroupCount;
  static constexpr int kConsumerThreads = 128 * kWarpGroups;
  static constexpr int kThreads = kConsumerThreads + 32;  // and one producer warp
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kTM = 64 * kWarpGroups;
  static constexpr int kSliceRows = kTM / kCluster;  // each CTA's share of an x box
  static constexpr uint32_t kRowBytes = kBs * 2;      // one swizzle row
  static constexpr uint32_t kAtomBytes = 8 * kRowBytes;
  static constexpr uint32_t kABytes = kTM * kRowBytes;
  static constexpr uint32_t kSliceBytes = kSliceRows * kRowBytes;
  static constexpr uint32_t kBBytes = kBs * kRowBytes;
  static constexpr uint32_t kAlign = 1024;
  static constexpr uint32_t kStageBytes =
      (kABytes + kGroup * kBBytes + kAlign - 1) / kAlign * kAlign;
  // Union tables (BuildClusterUnion gives each thread two block-rows of the window).
  static constexpr int kWindow = 2 * kThreads;
  static constexpr uint32_t kTableBytes = (kClusterColumns + 1) * 8 +
                                          kWindow * (kGroup * 4 + 4 + 4 + 4) + kWarps * 4;
  static constexpr uint32_t kSmemLimit = 227 * 1024;
  static constexpr int kStagesThatFit =
      static_cast<int>((kSmemLimit - kAlign - kTableBytes) / (kStageBytes + 16));
  static constexpr int kStages = kStagesThatFit < 16 ? kStagesThatFit : 16;
  static constexpr uint32_t kBarrierBytes = 2 * kStages * 8;
  // Dynamic shared memory is only 16-byte aligned: room to align the stages up to 1 KB.
  static constexpr int kSmemBytes = kAlign + kStages * kStageBytes + kBarrierBytes + kTableBytes;
  static constexpr int kAccumulators = kBs / 2;  // floats per thread of an m64 x bs slab
  static_assert(kTM % (8 * kCluster) == 0 && kSliceBytes % kAtomBytes == 0,
                "every slice starts on a swizzle atom");
  static_assert(kABytes % kAlign == 0, "the w slots start 1 KB aligned");
  static_assert(kStages >= 4, "a ring worth the name");
  static_assert(kSmemBytes <= static_cast<int>(kSmemLimit), "shared memory per block");
};

// The union tables of one window (block-rows [0, kWindow)): union_rows[u] is entry u's
// block-row, own_bits[u] which of this CTA's kGroup columns hold a block there and slots[u][c]
// that block (-1: absent), for the union over the cluster's kClusterColumns columns from
// cluster_first_column; this CTA's columns start at own_first (relative). Returns the union's
// size. Every thread calls it; it ends with a barrier. A block-row is in the union when any
// thread stores 1 to its flag (the same value whoever writes it), so every CTA of the cluster
// builds the same union whatever the order of the scatter.
template <typename Tiling>
__device__ __forceinline__ int BuildClusterUnion(const BsmmArgs& args,
                                                 int64_t cluster_first_column, int own_first,
                                                 int32_t* slots, int32_t* union_rows,
                                                 uint32_t* own_bits, int32_t* row_used,
                                                 int32_t* warp_counts, int64_t* bounds) {
  constexpr int kGroup = Tiling::kGroup;
  constexpr int kColumns = Tiling::kClusterColumns;
  constexpr int kWindow = Tiling::kWindow;
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t a_blocks = args.a_cols / Tiling::kBs;
  for (int i = tid; i < kWindow * kGroup; i += Tiling::kThreads) slots[i] = -1;
  for (int i = tid; i < kWindow; i += Tiling::kThreads) row_used[i] = 0;
  if (tid == 0) {
    // The cluster's columns are consecutive in the table: bounds[c] to bounds[c + 1] are
    // column c's entries (empty past the last column), clamped to be monotone within [0, nnz].
    int64_t lowest = 0;
    for (int c = 0; c <= kColumns; ++c) {
      const int64_t column = min(cluster_first_column + c, args.out_blocks);
      lowest = min(max(static_cast<int64_t>(__ldg(args.offsets + column)), lowest), args.nnz);
      bounds[c] = lowest;
    }
  }
  __syncthreads();
  for (int64_t e = bounds[0] + tid; e < bounds[kColumns]; e += Tiling::kThreads) {
    // The entry's column: the last c with bounds[c] <= e (binary search over kColumns + 1).
    int lo = 0;
    int hi = kColumns;
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (bounds[mid] <= e) lo = mid; else hi = mid;
    }
    const int c = lo;
    const int2 pair = __ldg(reinterpret_cast<const int2*>(args.entries) + e);
    // A corrupt pair is dropped (a zero block), as the other kernels do.
    const bool valid = pair.x >= 0 && pair.x < a_blocks && pair.y >= 0 && pair.y < args.nnz;
    if (!valid || pair.x >= kWindow) continue;
    row_used[pair.x] = 1;
    const int own = c - own_first;
    if (own >= 0 && own < kGroup) slots[pair.x * kGroup + own] = pair.y;
  }
  __syncthreads();
  // Compaction in block-row order, in place: each thread holds its two rows in registers
  // across the barrier, then writes them at their rank among the used rows.
  int32_t held[2][kGroup];
  uint32_t bits[2];
  int used[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = 2 * tid + h;
    used[h] = row_used[r] != 0;
    bits[h] = 0;
#pragma unroll
    for (int c = 0; c < kGroup; ++c) {
      held[h][c] = slots[r * kGroup + c];
      bits[h] |= (held[h][c] >= 0 ? 1u : 0u) << c;
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
    union_rows[rank] = 2 * tid + h;
    own_bits[rank] = bits[h];
    ++rank;
  }
  __syncthreads();
  return total;
}

template <MmaKind kKind, bool kTransW, typename Tiling>
__global__ void __launch_bounds__(Tiling::kThreads, 1)
    BsmmWgmmaClusterUnionKernel(BsmmArgs args, const __grid_constant__ CUtensorMap x_map,
                                const __grid_constant__ CUtensorMap w_map, int64_t row_tiles,
                                bool out_f32) {
  // Only the sm_90a image holds the kernel; the others (never launched: WgmmaAvailable) keep
  // a stub, which also keeps their compile time down.
#if JBS_WGMMA_DEVICE
  using Elem = ElemOf<kKind>;
  constexpr int kBs = Tiling::kBs;
  constexpr int kGroup = Tiling::kGroup;
  constexpr int kCluster = Tiling::kCluster;
  constexpr int kRowCluster = Tiling::kRowCluster;
  constexpr int kStages = Tiling::kStages;
  constexpr int kAcc = Tiling::kAccumulators;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw_base = tc::SharedAddress(smem_raw);
  const uint32_t smem_base = (raw_base + Tiling::kAlign - 1) & ~(Tiling::kAlign - 1);
  const uint32_t full_barriers = smem_base + kStages * Tiling::kStageBytes;
  const uint32_t empty_barriers = full_barriers + kStages * 8;
  // Tables, 8-byte aligned (the barriers' end is): the 64-bit bounds first.
  unsigned char* tables =
      smem_raw + (smem_base - raw_base) + kStages * Tiling::kStageBytes + Tiling::kBarrierBytes;
  int64_t* bounds = reinterpret_cast<int64_t*>(tables);
  int32_t* slots = reinterpret_cast<int32_t*>(bounds + Tiling::kClusterColumns + 1);
  int32_t* union_rows = slots + Tiling::kWindow * kGroup;
  uint32_t* own_bits = reinterpret_cast<uint32_t*>(union_rows + Tiling::kWindow);
  int32_t* row_used = reinterpret_cast<int32_t*>(own_bits + Tiling::kWindow);
  int32_t* warp_counts = row_used + Tiling::kWindow;

  const int tid = static_cast<int>(threadIdx.x);
  const int warpgroup = tid / 128;
  const int warp = (tid % 128) / 32;
  const int lane = tid & 31;
  // Launched only by LaunchWgmmaClusterUnion, with clusters of kCluster x kRowCluster; any
  // other launch would wait forever on peers that are not there.
  if (tma::ClusterCtaCount() != Tiling::kClusterCtasTotal) __trap();
  // This CTA's place in the cluster: column rank (which column group; its slice of the x
  // boxes) and row rank (which of the cluster's row tiles; its share of the w blocks). Cluster
  // ranks run x fastest.
  const uint32_t rank = tma::ClusterCtaRank();
  const uint32_t column_rank = rank % kCluster;
  const uint32_t row_rank = rank / kCluster;
  const int64_t first_column = static_cast<int64_t>(blockIdx.x) * kGroup;
  const int64_t cluster_first_column = first_column - static_cast<int64_t>(column_rank) * kGroup;

  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      tma::MbarrierInit(full_barriers + 8 * s, kRowCluster);
      tma::MbarrierInit(empty_barriers + 8 * s, Tiling::kReleaseTargets * Tiling::kWarpGroups);
    }
    tma::FenceMbarrierInit();
  }
  // The launcher's condition: one window covers every block-row. BuildClusterUnion's barriers
  // publish the barriers' initialisation within the CTA; the cluster barrier to the peers, which
  // signal them from now on.
  const int steps = BuildClusterUnion<Tiling>(args, cluster_first_column,
                                              static_cast<int>(column_rank) * kGroup, slots,
                                              union_rows,
                                              own_bits, row_used, warp_counts, bounds);
  tma::ClusterSync();

  if (tid >= Tiling::kConsumerThreads) {
    // Producer warp, lane 0: every union entry of every tile, in the consumers' order, up to
    // kStages ahead of the slowest CTA it writes into.
    if (lane == 0) {
      // x slices go to the row-mates (same row tile), w blocks to the column-mates (same
      // columns).
      const uint16_t row_mates =
          static_cast<uint16_t>(((1u << kCluster) - 1) << (row_rank * kCluster));
      uint16_t column_mates = 0;
#pragma unroll
      for (int r = 0; r < kRowCluster; ++r) column_mates |= 1u << (column_rank + r * kCluster);
      int64_t step = 0;
      for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
        for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
          const int32_t slice_row =
              static_cast<int32_t>(tile * Tiling::kTM + column_rank * Tiling::kSliceRows);
          // Slices wholly past the last row are not loaded, so that no box lies wholly out of
          // bounds (their stale rows feed only accumulator rows that are never stored); every
          // row-mate counts the same ones. A padded row tile (cluster_union_2d) has none.
          const int64_t rows_left = args.a_rows - tile * Tiling::kTM;
          const int slices_in_bounds = static_cast<int>(
              max(int64_t{0}, min(static_cast<int64_t>(kCluster),
                                  (rows_left + Tiling::kSliceRows - 1) / Tiling::kSliceRows)));
          for (int u = 0; u < steps; ++u, ++step) {
            const int stage = static_cast<int>(step % kStages);
            if (step >= kStages) {
              tma::MbarrierWaitOrTrap(empty_barriers + 8 * stage,
                                      static_cast<uint32_t>(((step - kStages) / kStages) & 1));
            }
            const uint32_t present = own_bits[u];
            const uint32_t full = full_barriers + 8 * stage;
            const uint32_t a_dst = smem_base + stage * Tiling::kStageBytes;
            tma::MbarrierArriveExpectTx(full, slices_in_bounds * Tiling::kSliceBytes +
                                                  __popc(present) * Tiling::kBBytes);
            if constexpr (kRowCluster == 2) {
              // The column-mate's full barrier waits for this producer's arrival as well, even
              // where this one is dealt no w block: otherwise the column-mate could consume a
              // whole ring ahead of this producer and release on its empty barrier into a phase
              // not yet begun.
              tma::MbarrierArriveCluster(full, column_rank + (1 - row_rank) * kCluster);
            }
            if (static_cast<int>(column_rank) < slices_in_bounds) {
              tma::Load3DMulticast(a_dst + column_rank * Tiling::kSliceBytes, &x_map, full,
                                   union_rows[u] * kBs, slice_row, static_cast<int32_t>(g),
                                   row_mates);
            }
            // The present w blocks, dealt in column order among the column-mates: block k of
            // entry u is loaded by row rank (k + u) % kRowCluster, into all of them (the u
            // evens out entries of one block).
            int dealt = 0;
#pragma unroll
            for (int c = 0; c < kGroup; ++c) {
              if (!(present >> c & 1u)) continue;  // absent: never multiplied, its slot stale
              const uint32_t w_dst = a_dst + Tiling::kABytes + c * Tiling::kBBytes;
              const int32_t w_row = slots[u * kGroup + c] * kBs;
              if constexpr (kRowCluster == 1) {
                tma::Load3D(w_dst, &w_map, full, 0, w_row, static_cast<int32_t>(g));
              } else if ((dealt + u) % kRowCluster == static_cast<int>(row_rank)) {
                tma::Load3DMulticast(w_dst, &w_map, full, 0, w_row, static_cast<int32_t>(g),
                                     column_mates);
              }
              ++dealt;
            }
          }
        }
      }
    }
  } else {
    using Operands = WgmmaBlockOperands<kBs, kTransW>;
    const uint32_t slab = warpgroup * 64 * Tiling::kRowBytes;
    // Lane i < kReleaseTargets of the warpgroup's first warp releases stages on one CTA that
    // writes into this one: lanes below kCluster on the row-mates, the others on the
    // column-mates of the other row ranks.
    const int release_lane = tid % 128;
    uint32_t release_rank = 0;
    if (release_lane < kCluster) {
      release_rank = row_rank * kCluster + release_lane;
    } else {
      const int other = release_lane - kCluster;  // 0 .. kRowCluster - 2
      const int other_row = other < static_cast<int>(row_rank) ? other : other + 1;
      release_rank = column_rank + other_row * kCluster;
    }
    const bool releases = release_lane < Tiling::kReleaseTargets;
    const auto release = [&](int64_t step) {
      if (releases) {
        tma::MbarrierArriveCluster(empty_barriers + 8 * static_cast<int>(step % kStages),
                                   release_rank);
      }
    };

    int64_t base = 0;  // global number of this CTA's first step in the current tile
    for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
      for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
        const int64_t row0 = tile * Tiling::kTM;
        float acc[kGroup][kAcc];
#pragma unroll
        for (int c = 0; c < kGroup; ++c)
#pragma unroll
          for (int i = 0; i < kAcc; ++i) acc[c][i] = 0.0f;

        for (int u = 0; u < steps; ++u) {
          const int64_t step = base + u;
          const int stage = static_cast<int>(step % kStages);
          // Broadcast from lane 0 so that ptxas sees warp-uniform branches: from a per-thread
          // value it serializes every wgmma (info C7520, NOTES v19).
          const uint32_t present = __shfl_sync(0xffffffffu, own_bits[u], 0);
          tma::MbarrierWaitOrTrap(full_barriers + 8 * stage,
                                  static_cast<uint32_t>((step / kStages) & 1));
          const uint32_t a_slab = smem_base + stage * Tiling::kStageBytes + slab;
          const uint32_t b_stage = smem_base + stage * Tiling::kStageBytes + Tiling::kABytes;
#pragma unroll
          for (int c = 0; c < kGroup; ++c) wg::FenceAccumulators(acc[c]);
          wg::WgmmaFence();
          // One commit group per present column (v19: a single commit after the branches
          // became a batch of its own), so that waiting for "at most this entry's group count"
          // retires exactly the previous entry.
#pragma unroll
          for (int c = 0; c < kGroup; ++c) {
            if (!(present >> c & 1u)) continue;
#pragma unroll
            for (int k16 = 0; k16 < kBs / 16; ++k16) {
              const uint64_t a_descriptor = Operands::XSlab(a_slab, k16);
              const uint64_t b_descriptor = Operands::WBlock(b_stage + c * Tiling::kBBytes, k16);
              if constexpr (kBs == 32) {
                wg::Wgmma64x32x16<Elem, Operands::kTransB>(acc[c], a_descriptor, b_descriptor);
              } else {
                wg::Wgmma64x16x16<Elem, Operands::kTransB>(acc[c], a_descriptor, b_descriptor);
              }
            }
            wg::WgmmaCommit();
          }
#pragma unroll
          for (int c = 0; c < kGroup; ++c) wg::FenceAccumulators(acc[c]);
          wg::WgmmaWaitAtMost(__popc(present));
          // Entry u - 1's wgmma have retired: release its stage on every CTA that writes into
          // this one.
          if (u >= 1) release(step - 1);
        }
        wg::WgmmaWait<0>();
#pragma unroll
        for (int c = 0; c < kGroup; ++c) wg::FenceAccumulators(acc[c]);
        // The last entry's release, so that every consumed step is released exactly once.
        if (steps > 0) release(base + steps - 1);
        base += steps;

#pragma unroll
        for (int c = 0; c < kGroup; ++c) {
          if (first_column + c >= args.out_blocks) continue;
          StoreWgmmaWarpTile<Elem>(args, acc[c], g, row0 + warpgroup * 64 + warp * 16,
                                   first_column + c, lane, out_f32);
        }
      }
    }
  }
  // No CTA leaves while a peer may still arrive on its barriers (its last releases).
  tma::ClusterSync();
#else
  __trap();
#endif
}

// How many clusters of `config`'s shape the current device holds at once, cached per device
// (a host-side occupancy computation: no synchronization); 0 if it cannot say.
template <typename Kernel>
int ActiveClusters(Kernel kernel, const cudaLaunchConfig_t& config,
                   std::atomic<int> (&cache)[64]) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return 0;
  int clusters = cache[device].load(std::memory_order_relaxed);
  if (clusters == 0) {
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    cache[device].store(clusters, std::memory_order_relaxed);
  }
  return clusters;
}

// The configurations: at bs 32, 8 columns x 128 rows per CTA (v19's tile), at bs 16, 16
// columns (the same 256 output columns and 128 accumulator floats per thread); clusters of 4
// along the columns, so that an x box serves 32 or 64 columns, and kRowCluster row tiles
// (`cluster_union_2d`: 2, sharing each w block between two row tiles).
template <int kBs, int kRowCluster>
using ClusterUnionTilingFor = ClusterUnionTiling<kBs, kBs == 32 ? 8 : 16, /*warpgroups=*/2,
                                                 /*cluster=*/4, kRowCluster>;

// Launches the cluster-union kernel: clusters of kCluster x kRowCluster CTAs, kCluster column
// groups by kRowCluster row tiles, as many as fill one wave, each striding over the rest of the
// row tiles and the operand groups. The x map's box is one CTA's slice (bs columns x
// kSliceRows rows); the w map's one block. Pure host work, as LaunchWgmmaTma.
// cudaErrorNotSupported where the layout's block-rows exceed one table window, the shapes a
// tensor map's or the grid's limits, or the cluster cannot be launched, so that the caller
// falls back to the one-column kernels.
template <MmaKind kKind, bool kTransW, int kBs, int kRowCluster>
cudaError_t LaunchWgmmaClusterUnion(const BsmmArgs& args, bool out_f32, cudaStream_t stream) {
  using Tiling = ClusterUnionTilingFor<kBs, kRowCluster>;
  constexpr bool kBf16 = kKind == MmaKind::kBf16;
  const int64_t column_groups = (args.out_blocks + Tiling::kGroup - 1) / Tiling::kGroup;
  const int64_t grid_x =
      (column_groups + Tiling::kCluster - 1) / Tiling::kCluster * Tiling::kCluster;
  if (args.a_cols / kBs > Tiling::kWindow || grid_x > kMaxGridX || args.nnz * kBs > INT32_MAX ||
      args.a_cols > INT32_MAX || args.a_rows > INT32_MAX || args.groups > INT32_MAX) {
    return cudaErrorNotSupported;
  }
  CUtensorMap x_map;
  CUtensorMap w_map;
  {
    const uint64_t cols = static_cast<uint64_t>(args.a_cols);
    const uint64_t rows = static_cast<uint64_t>(args.a_rows);
    const uint64_t dims[3] = {cols, rows, static_cast<uint64_t>(args.groups)};
    const uint64_t strides[2] = {cols * 2, rows * cols * 2};
    const uint32_t box[3] = {static_cast<uint32_t>(kBs), Tiling::kSliceRows, 1};
    if (!tma::EncodeSwizzled(&x_map, kBf16, 3, args.a, dims, strides, box)) {
      return cudaErrorNotSupported;
    }
  }
  if (!EncodeWeightBlockMap<kKind, kBs>(&w_map, args.w, args.nnz, args.groups)) {
    return cudaErrorNotSupported;
  }
  auto kernel = BsmmWgmmaClusterUnionKernel<kKind, kTransW, Tiling>;
  static std::atomic<uint64_t> done_devices{0};
  if (OptInSharedMemory(reinterpret_cast<const void*>(kernel), Tiling::kSmemBytes,
                        done_devices) != cudaSuccess) {
    return cudaErrorNotSupported;
  }
  // Row tiles in units of a cluster's kRowCluster: every CTA of a cluster walks as many tiles
  // (past the last one, wholly out of bounds: zeros read, nothing stored), so that they agree
  // on the steps.
  constexpr int64_t kUnitRows = Tiling::kTM * kRowCluster;
  const int64_t row_units = (args.rows + kUnitRows - 1) / kUnitRows;
  const int64_t padded_row_tiles = row_units * kRowCluster;
  if (padded_row_tiles * Tiling::kTM > INT32_MAX) return cudaErrorNotSupported;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(grid_x), kRowCluster, 1);
  config.blockDim = dim3(Tiling::kThreads);
  config.dynamicSmemBytes = Tiling::kSmemBytes;
  config.stream = stream;
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = Tiling::kCluster;
  cluster.val.clusterDim.y = kRowCluster;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  // One wave of clusters, each striding over row units and operand groups: every CTA builds its
  // union tables once (a scan of its cluster's entries) instead of once per row tile, and no
  // cluster waits for a second wave (GPCs of 16-18 SMs hold fewer clusters of 4 than SMs / 4).
  // Where the column clusters alone leave over a quarter of the wave's clusters idle (or do
  // not fit in one), a cluster per (row unit, group) instead, in as many waves as it takes.
  static std::atomic<int> active_clusters_by_device[64];
  const int active = ActiveClusters(kernel, config, active_clusters_by_device);
  if (active <= 0) return cudaErrorNotSupported;
  const int64_t clusters_x = grid_x / Tiling::kCluster;
  const int64_t strides_per_wave = active / clusters_x;
  const bool one_wave = strides_per_wave >= 1 && 4 * clusters_x * strides_per_wave >= 3 * active;
  const int64_t grid_z = std::min(std::min(args.groups, kMaxGridYZ),
                                  one_wave ? strides_per_wave : kMaxGridYZ);
  const int64_t units_y = std::min(std::min(row_units, kMaxGridYZ / kRowCluster),
                                   one_wave ? std::max<int64_t>(1, strides_per_wave / grid_z)
                                            : kMaxGridYZ);
  config.gridDim.y = static_cast<unsigned>(units_y * kRowCluster);
  config.gridDim.z = static_cast<unsigned>(grid_z);
  const cudaError_t status =
      cudaLaunchKernelEx(&config, kernel, args, x_map, w_map, padded_row_tiles, out_f32);
  if (status != cudaSuccess) {
    // A cluster the device cannot place is a launch-configuration error, which does not stick
    // to the context: clear it and let the caller take the one-column kernel.
    (void)cudaGetLastError();
    return cudaErrorNotSupported;
  }
  return cudaSuccess;
}

}  // namespace bsmm_tc
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_CLUSTER_UNION_KERNEL_CUH_
