// Tensor-core jbs_bsmm. One CTA owns a kTM-row x kNT-column tile of one output block-column
// (kNT = bs, or half of a bs=128 column). The column's reduction is the concatenation of its
// entries' blocks along K; it is consumed in kKC-long chunks staged in shared memory by a
// multi-stage cp.async pipeline (the gathered A slice plus the matching rows of op(W)).
// Because a chunk is just a K range of the concatenation, bs=8 and bs=16 chunks pack several
// entries and the mma instructions always see full k16 (k8 for tf32) steps.
//
// The CTA's warps form kWarpsK independent "k-groups"; each group walks every kWarpsK-th chunk
// with its own pipeline and accumulators (split-K inside the CTA). Small-M problems are
// bound by streaming W, and one column holds few chunks, so there several groups keep more
// of W in flight; large M uses one group whose warps tile the rows. Partial sums are added in
// group order through shared memory: the result does not depend on timing.

//
// This header holds the kernel and its launch templates; each MmaKind is instantiated in a
// translation unit of its own (bsmm_tc_<kind>.cu) so the builds of the four compile in
// parallel, and bsmm_tensor_core.cu dispatches to them.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_TENSOR_CORE_KERNEL_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_TENSOR_CORE_KERNEL_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "blocksparse_kernels.h"
#include "bsmm_union_panel_kernel.cuh"
#include "bsmm_wgmma_tma_kernel.cuh"
#include "bsmm_tc_common.cuh"
#include "launch_util.h"
#include "tensor_core.cuh"

namespace jbs {
namespace bsmm_tc {

// kSwizzle: rows are stored unpadded and each 16-byte unit is XOR-swizzled with the row (AUnit,
// WUnit below), which keeps the fragment loads conflict-free while a stage shrinks, so one more
// stage fits at the same occupancy. 16-bit types: 64-byte rows, for ldmatrix. float32: 128-byte
// rows, for the scalar tf32 fragment loads.
template <MmaKind kKind, int kBs, bool kTransW, int kTM, int kWarpsM, int kWarpsN, int kWarpsK,
          int kStages, bool kSwizzle = false>
struct TcTiling {
  using Elem = ElemOf<kKind>;
  static constexpr bool kHalf = sizeof(Elem) == 2;
  static constexpr int kVec = 16 / static_cast<int>(sizeof(Elem));  // elements per cp.async
  // The W-streaming regime (kTM == 32) splits wide columns further: more CTAs in flight and
  // a register budget that holds without spilling.
  static constexpr int kNTMax = kTM <= 32 || (kTM <= 64 && kWarpsK > 1) ? 32 : 64;
  static constexpr int kNT = kBs < kNTMax ? kBs : kNTMax;
  static constexpr int kNSplit = kBs / kNT;
  static constexpr int kKC = 32;
  static constexpr int kKStep = kHalf ? 16 : 8;
  static constexpr int kWarpCols = kWarpsN;
  static constexpr int kGroupWarps = kWarpsM * kWarpsN;
  static constexpr int kGroupThreads = 32 * kGroupWarps;
  static constexpr int kThreads = kGroupThreads * kWarpsK;
  static constexpr int kTileRows = kTM;
  static constexpr int kWM = kTM / kWarpsM;
  static constexpr int kWN = kNT / kWarpsN;
  static constexpr int kMTiles = kWM / 16;
  static constexpr int kNTiles = kWN / 8;

  // Row strides, in 16-byte units. An odd unit count puts the 8 rows read by one ldmatrix
  // phase (or, for scalar tf32 reads, rows g = 0..7 at column t) in distinct banks. A k-major
  // tf32 W is read as W[k = t][n = g], which instead needs a stride of 8 or 24 words mod 32.
  static constexpr int kAUnits = kKC / kVec;
  static constexpr int kAStride = (kSwizzle ? kAUnits : (kAUnits | 1)) * kVec;
  static constexpr int kWRows = kTransW ? kNT : kKC;
  static constexpr int kWUnits = kTransW ? kKC / kVec : kNT / kVec;
  static constexpr int kWStrideUnits =
      kSwizzle ? kWUnits
               : (kTransW || kHalf) ? (kWUnits | 1) : (kWUnits < 2 ? 2 : ((kWUnits / 2) | 1) * 2);
  static constexpr int kWStride = kWStrideUnits * kVec;
  static constexpr int kAElems = kTM * kAStride;
  static constexpr int kStageElems = kAElems + kWRows * kWStride;
  static constexpr int kPipeBytes =
      kWarpsK * kStages * kStageElems * static_cast<int>(sizeof(Elem));
  // Partial sums of groups 1..kWarpsK-1, fp32, row stride padded by 4 words.
  static constexpr int kRedStride = kNT + 4;
  static constexpr int kRedBytes = (kWarpsK - 1) * kTM * kRedStride * 4;
  static constexpr int kStageAreaBytes = kPipeBytes > kRedBytes ? kPipeBytes : kRedBytes;
  // The column's (a_blk, k) pairs are staged in shared memory a window at a time, so the
  // copy-issue path of the pipeline never waits on a dependent global load.
  static constexpr int kEntryWindow = 256;
  static constexpr int kSmemBytes = kStageAreaBytes + kEntryWindow * 8;
  // The float32 swizzled stages exist to fit 3 CTAs per SM, which the registers must allow too:
  // left alone, ptxas keeps every swizzled fragment address live (~200 registers, 2 CTAs).
  static constexpr int kMinCtas = kSwizzle && !kHalf ? 3 : 1;
  static_assert(kStageAreaBytes % 16 == 0);
  static_assert(kEntryWindow % (kKC / (kBs < kKC ? kBs : kKC)) == 0,
                "a chunk never straddles two entry windows");

  static_assert(kTM % (16 * kWarpsM) == 0 && kNT % (8 * kWarpsN) == 0);
  static_assert(!kSwizzle || (kHalf ? kAUnits == 4 && kWUnits == 4 : kAUnits == 8 && kWUnits == 8),
                "the swizzles are written for 64-byte rows of 16-bit and 128-byte rows of "
                "32-bit elements");

  // Physical 16-byte unit of logical unit `unit` in stage row `row` of A, and of W.
  // 16-bit: rows are 4 units wide, so an ldmatrix phase (8 consecutive rows, one logical unit)
  // lands on 8 distinct bank groups. float32: rows are 8 units wide; A (and a transposed W) is
  // read 8 rows x 4 consecutive k at a time, so the unit XORs with row % 8; an untransposed W
  // is read 4 rows (k) x 8 consecutive n (two units), so it XORs with 2 (row % 4).
  static __device__ __forceinline__ int AUnit(int row, int unit) {
    if constexpr (!kSwizzle) {
      return unit;
    } else if constexpr (kHalf) {
      return unit ^ ((row >> 1) & 3);
    } else {
      return unit ^ (row & 7);
    }
  }
  static __device__ __forceinline__ int WUnit(int row, int unit) {
    if constexpr (!kSwizzle || kHalf || kTransW) {
      return AUnit(row, unit);
    } else {
      return unit ^ ((row & 3) << 1);
    }
  }
  // Element offsets of (row, column) in an A / W stage: column-th element of the row's logical
  // 16-byte units, through the swizzle.
  static __device__ __forceinline__ int AOffset(int row, int column) {
    return row * kAStride + AUnit(row, column / kVec) * kVec + column % kVec;
  }
  static __device__ __forceinline__ int WOffset(int row, int column) {
    return row * kWStride + WUnit(row, column / kVec) * kVec + column % kVec;
  }
  static_assert(!kHalf || kNTiles == 1 || kNTiles % 2 == 0, "B is loaded two n-tiles at a time");
  static_assert(kGroupThreads % kAUnits == 0 && (kTM * kAUnits) % kGroupThreads == 0);
  static_assert((kWRows * kWUnits) % kGroupThreads == 0 || kWRows * kWUnits < kGroupThreads);
  static_assert(kBs * static_cast<int>(sizeof(Elem)) >= 16, "a 16-byte copy spans one entry");
};

// Which entry a reduction index of the column falls in, and where in that entry's block.
struct EntryRef {
  int64_t a_col;   // column of `a` (already offset by the block)
  int64_t w_base;  // element offset of the w block
  int tap;         // filter tap of a convolution (0 for a matmul)
  bool valid;
};

// Copies entries [begin, begin + count) into `staged`, with out-of-range pairs (a corrupt
// table) marked as holes, which then read as zero blocks instead of faulting.
__device__ __forceinline__ void StageEntries(int2* staged, const int32_t* __restrict__ entries,
                                             int64_t begin, int count, int64_t a_blocks,
                                             int64_t nnz) {
  for (int i = static_cast<int>(threadIdx.x); i < count; i += static_cast<int>(blockDim.x)) {
    const int2 pair = __ldg(reinterpret_cast<const int2*>(entries) + begin + i);
    const bool valid = pair.x >= 0 && pair.x < a_blocks && pair.y >= 0 && pair.y < nnz;
    staged[i] = valid ? pair : make_int2(-1, -1);
  }
}

// A convolution's reduction runs over (entry, tap) pairs of the staged window, tap-major (all
// entries of tap 0, then tap 1, ...), so a thread's gathered rows change once per tap rather
// than every chunk: measured 1.9x over entry-major (benchmarks/NOTES.md, v3b). w holds the
// taps of block k at k * taps + t. A matmul is the one-tap case.
template <int kBs, bool kConv>
__device__ __forceinline__ EntryRef LookUp(const int2* staged, int64_t pair, int64_t count,
                                           int taps, int64_t w_group_base) {
  int64_t local = pair;
  int tap = 0;
  if constexpr (kConv) {
    tap = static_cast<int>(pair / count);
    local = pair - static_cast<int64_t>(tap) * count;
    if (tap >= taps) local = count;  // past the end: a zero block
  }
  EntryRef ref{0, 0, 0, false};
  if (local < count) {
    const int2 entry = staged[local];
    ref.valid = entry.x >= 0;
    ref.tap = tap;
    if (ref.valid) {
      ref.a_col = static_cast<int64_t>(entry.x) * kBs;
      ref.w_base = w_group_base +
                   (static_cast<int64_t>(entry.y) * (kConv ? taps : 1) + ref.tap) * (kBs * kBs);
    }
  }
  return ref;
}

// Where the output row of a convolution reads `a` for one tap: the row index in `a`, or -1
// for padding (and, for the transposed convolution, taps that skip this row under a stride).
struct ConvRow {
  int64_t a_base;  // batch * a_spatial_size, or -1 for rows past the end
  int pos[3];      // output position
};

__device__ __forceinline__ ConvRow DecomposeRow(const ConvGather& c, int64_t row, int64_t rows) {
  ConvRow out{-1, {0, 0, 0}};
  if (row >= rows) return out;
  const int64_t out_size = static_cast<int64_t>(c.out_spatial[0]) * c.out_spatial[1] * c.out_spatial[2];
  const int64_t n = row / out_size;
  int64_t rem = row - n * out_size;
  out.pos[2] = static_cast<int>(rem % c.out_spatial[2]);
  rem /= c.out_spatial[2];
  out.pos[1] = static_cast<int>(rem % c.out_spatial[1]);
  out.pos[0] = static_cast<int>(rem / c.out_spatial[1]);
  out.a_base = n * (static_cast<int64_t>(c.a_spatial[0]) * c.a_spatial[1] * c.a_spatial[2]);
  return out;
}

__device__ __forceinline__ int64_t SourceRow(const ConvGather& c, const ConvRow& row, int tap) {
  if (row.a_base < 0) return -1;
  const int taps_hw = c.kernel[1] * c.kernel[2];
  const int t[3] = {tap / taps_hw, (tap / c.kernel[2]) % c.kernel[1], tap % c.kernel[2]};
  int src[3];
#pragma unroll
  for (int d = 0; d < 3; ++d) {
    if (!c.transposed) {
      src[d] = row.pos[d] * c.stride[d] + t[d] * c.dilation[d] - c.pad_lo[d];
    } else {
      const int num = row.pos[d] + c.pad_lo[d] - t[d] * c.dilation[d];
      if (num < 0 || num % c.stride[d] != 0) return -1;
      src[d] = num / c.stride[d];
    }
    if (src[d] < 0 || src[d] >= c.a_spatial[d]) return -1;
  }
  return row.a_base + (static_cast<int64_t>(src[0]) * c.a_spatial[1] + src[1]) * c.a_spatial[2] + src[2];
}

// This thread's accumulator fragments, as float pairs in a row-major tile of fp32 sums with row
// stride kRedStride: visit(pair, offset) for each fragment pair (mt, nt, h), which holds row
// m_base + 16 mt + lg + 8 h, columns n_base + 8 nt + 2 lt and the one after.
template <typename Tiling, typename Acc, typename Visit>
__device__ __forceinline__ void ForEachFragmentPair(Acc& acc, int m_base, int n_base, int lg,
                                                    int lt, Visit&& visit) {
#pragma unroll
  for (int mt = 0; mt < Tiling::kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < Tiling::kNTiles; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = m_base + mt * 16 + lg + 8 * h;
        const int c = n_base + nt * 8 + 2 * lt;
        visit(&acc[mt][nt][2 * h], r * Tiling::kRedStride + c);
      }
}

template <typename Tiling, typename Acc>
__device__ __forceinline__ void StoreFragmentSums(float* tile, Acc& acc, int m_base, int n_base,
                                                  int lg, int lt) {
  ForEachFragmentPair<Tiling>(acc, m_base, n_base, lg, lt, [&](float* pair, int offset) {
    *reinterpret_cast<float2*>(tile + offset) = make_float2(pair[0], pair[1]);
  });
}

template <typename Tiling, typename Acc>
__device__ __forceinline__ void AddFragmentSums(const float* tile, Acc& acc, int m_base,
                                                int n_base, int lg, int lt) {
  ForEachFragmentPair<Tiling>(acc, m_base, n_base, lg, lt, [&](float* pair, int offset) {
    const float2 v = *reinterpret_cast<const float2*>(tile + offset);
    pair[0] += v.x;
    pair[1] += v.y;
  });
}

// kMinCtasWanted: a minimum of resident CTAs per SM for the register budget, where it is not
// the tiling's own (0). kSplit: how 3xTF32 splits its operands (tc::Tf32Split).
template <MmaKind kKind, int kBs, bool kTransW, int kTM, int kWarpsM, int kWarpsN, int kWarpsK,
          int kStages, bool kConv, bool kSwizzle, int kMinCtasWanted, tc::Tf32Split kSplit>
__global__ void __launch_bounds__(
    TcTiling<kKind, kBs, kTransW, kTM, kWarpsM, kWarpsN, kWarpsK, kStages, kSwizzle>::kThreads,
    kMinCtasWanted ? kMinCtasWanted
                   : TcTiling<kKind, kBs, kTransW, kTM, kWarpsM, kWarpsN, kWarpsK, kStages,
                              kSwizzle>::kMinCtas)
    BsmmTcKernel(BsmmArgs args, ConvGather conv, int64_t row_tiles, bool out_f32) {
  using Tiling = TcTiling<kKind, kBs, kTransW, kTM, kWarpsM, kWarpsN, kWarpsK, kStages, kSwizzle>;
  using Elem = typename Tiling::Elem;
  constexpr int kVec = Tiling::kVec;
  constexpr int kKC = Tiling::kKC;
  constexpr int kNT = Tiling::kNT;
  constexpr int kMTiles = Tiling::kMTiles;
  constexpr int kNTiles = Tiling::kNTiles;
  constexpr int kGroupThreads = Tiling::kGroupThreads;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* smem = reinterpret_cast<Elem*>(smem_raw);

  const Elem* __restrict__ a = static_cast<const Elem*>(args.a);
  const Elem* __restrict__ w = static_cast<const Elem*>(args.w);
  const int32_t* __restrict__ entries = args.entries;
  const int64_t rows = args.rows;
  const int64_t a_cols = args.a_cols;
  const int64_t nnz = args.nnz;
  const int64_t groups = args.groups;
  const int64_t a_blocks = a_cols / kBs;
  const int taps = kConv ? conv.taps : 1;
  const int64_t out_cols = args.out_blocks * kBs;

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int kgroup = tid / kGroupThreads;
  const int gtid = tid % kGroupThreads;
  const int gwarp = gtid / 32;
  const int warp_m = gwarp / Tiling::kWarpCols;
  const int warp_n = gwarp % Tiling::kWarpCols;
  const int lg = lane >> 2;
  const int lt = lane & 3;

  const int64_t out_block = blockIdx.x / Tiling::kNSplit;
  const int n0 = static_cast<int>(blockIdx.x % Tiling::kNSplit) * kNT;
  const int64_t entry_begin = min(max(static_cast<int64_t>(__ldg(args.offsets + out_block)),
                                      int64_t{0}), nnz);
  const int64_t entry_end = min(max(static_cast<int64_t>(__ldg(args.offsets + out_block + 1)),
                                    entry_begin), nnz);
  int2* staged = reinterpret_cast<int2*>(smem_raw + Tiling::kStageAreaBytes);

  Elem* group_stages = smem + kgroup * (kStages * Tiling::kStageElems);
  auto group_sync = [&]() {
    if constexpr (kWarpsK == 1) {
      __syncthreads();
    } else if constexpr (kGroupThreads == 32) {
      __syncwarp();
    } else {
      tc::NamedBarrier(1 + kgroup, kGroupThreads);
    }
  };

  for (int64_t g = blockIdx.z; g < groups; g += gridDim.z) {
    const Elem* a_group = a + g * args.a_rows * a_cols;
    const int64_t w_group_base = g * nnz * taps * (kBs * kBs);
    for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
      const int64_t row0 = tile * kTM;
      int window = 0;  // entries staged for the current window (load_chunk reads them)
      constexpr int kARowsPerThread = kTM * Tiling::kAUnits / kGroupThreads;
      // A thread copies the same rows for every chunk: decompose them once per tile.
      ConvRow conv_rows[kConv ? kARowsPerThread : 1];
      int64_t source_rows[kConv ? kARowsPerThread : 1];
      int source_tap = -1;  // the tap source_rows were gathered for
      if constexpr (kConv) {
#pragma unroll
        for (int i = 0; i < kARowsPerThread; ++i) {
          const int r = gtid / Tiling::kAUnits + i * (kGroupThreads / Tiling::kAUnits);
          conv_rows[i] = DecomposeRow(conv, row0 + r, rows);
        }
      }

      // Chunk `chunk` (index into the column's concatenated K) -> stage `stage`.
      auto load_chunk = [&](int64_t chunk, int stage) {
        Elem* a_stage = group_stages + stage * Tiling::kStageElems;
        Elem* w_stage = a_stage + Tiling::kAElems;
        const int64_t k0 = chunk * kKC;
        {
          // Every thread copies the same K offset for all its rows, so one look-up suffices.
          const int q = gtid % Tiling::kAUnits;
          const int64_t kk = k0 + q * kVec;
          const EntryRef ref = LookUp<kBs, kConv>(staged, kk / kBs, window, taps, w_group_base);
          const int within = static_cast<int>(kk % kBs);
          if constexpr (kConv) {
            if (ref.tap != source_tap) {
#pragma unroll
              for (int i = 0; i < kARowsPerThread; ++i) {
                source_rows[i] = SourceRow(conv, conv_rows[i], ref.tap);
              }
              source_tap = ref.tap;
            }
          }
#pragma unroll
          for (int i = 0; i < kARowsPerThread; ++i) {
            const int r = gtid / Tiling::kAUnits + i * (kGroupThreads / Tiling::kAUnits);
            int64_t row = row0 + r;
            if constexpr (kConv) row = source_rows[i];
            const bool live = ref.valid && (kConv ? row >= 0 : row < rows);
            const Elem* src = live ? a_group + row * a_cols + ref.a_col + within : a;
            tc::CpAsync16(
                tc::SharedAddress(a_stage + r * Tiling::kAStride + Tiling::AUnit(r, q) * kVec), src,
                live);
          }
        }
        constexpr int kWCopies = Tiling::kWRows * Tiling::kWUnits;
        constexpr int kWIters = (kWCopies + kGroupThreads - 1) / kGroupThreads;
        // With bs >= kKC a chunk lies inside one entry: one look-up for all of this thread's
        // copies keeps the 64-bit address arithmetic (and registers) out of the unrolled loop.
        EntryRef chunk_ref{0, 0, 0, false};
        if constexpr (kBs >= kKC) {
          chunk_ref = LookUp<kBs, kConv>(staged, k0 / kBs, window, taps, w_group_base);
        }
#pragma unroll
        for (int i = 0; i < kWIters; ++i) {
          const int u = gtid + i * kGroupThreads;
          if (kWCopies % kGroupThreads != 0 && u >= kWCopies) break;
          const int r = u / Tiling::kWUnits;
          const int q = u % Tiling::kWUnits;
          // Untransposed: stage row r is reduction index k0 + r, W row `within`.
          // Transposed: stage row r is output column n0 + r, W row n0 + r, columns = K.
          const int64_t kk = kTransW ? k0 + q * kVec : k0 + r;
          EntryRef ref = chunk_ref;
          if constexpr (kBs < kKC) {
            ref = LookUp<kBs, kConv>(staged, kk / kBs, window, taps, w_group_base);
          }
          const int within = static_cast<int>(kk % kBs);
          const int offset = kTransW ? (n0 + r) * kBs + within : within * kBs + n0 + q * kVec;
          const Elem* src = ref.valid ? w + ref.w_base + offset : w;
          tc::CpAsync16(
              tc::SharedAddress(w_stage + r * Tiling::kWStride + Tiling::WUnit(r, q) * kVec), src,
              ref.valid);
        }
      };

      float acc[kMTiles][kNTiles][4];
      tc::ZeroAccumulators(acc);

      auto compute_chunk = [&](int stage) {
        const Elem* a_stage = group_stages + stage * Tiling::kStageElems;
        const Elem* w_stage = a_stage + Tiling::kAElems;
        const int m_base = warp_m * Tiling::kWM;
        const int n_base = warp_n * Tiling::kWN;
#pragma unroll
        for (int ks = 0; ks < kKC / Tiling::kKStep; ++ks) {
          const int kb = ks * Tiling::kKStep;
          if constexpr (Tiling::kHalf) {
            uint32_t af[kMTiles][4];
            uint32_t bf[kNTiles][2];
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt) {
              const int row = m_base + mt * 16 + (lane & 15);
              const Elem* p = a_stage + row * Tiling::kAStride +
                              Tiling::AUnit(row, kb / 8 + (lane >> 4)) * 8;
              tc::LdMatrixX4(af[mt][0], af[mt][1], af[mt][2], af[mt][3], tc::SharedAddress(p));
            }
            // Lane l addresses row (l & 7) of 8x8 matrix (l >> 3): matrices alternate the
            // k half (0-7, 8-15) and then advance one n-tile.
            const int mi = lane >> 3;
            const int rr = lane & 7;
            if constexpr (kNTiles == 1) {
              const int row = kTransW ? n_base + rr : kb + (mi & 1) * 8 + rr;
              const int unit = kTransW ? kb / 8 + (mi & 1) : n_base / 8;
              const Elem* p = w_stage + row * Tiling::kWStride + Tiling::WUnit(row, unit) * 8;
              if constexpr (kTransW) {
                tc::LdMatrixX2(bf[0][0], bf[0][1], tc::SharedAddress(p));
              } else {
                tc::LdMatrixX2Trans(bf[0][0], bf[0][1], tc::SharedAddress(p));
              }
            } else {
#pragma unroll
              for (int nt = 0; nt < kNTiles; nt += 2) {
                const int n = n_base + (nt + (mi >> 1)) * 8;
                const int row = kTransW ? n + rr : kb + (mi & 1) * 8 + rr;
                const int unit = kTransW ? kb / 8 + (mi & 1) : n / 8;
                const Elem* p = w_stage + row * Tiling::kWStride + Tiling::WUnit(row, unit) * 8;
                if constexpr (kTransW) {
                  tc::LdMatrixX4(bf[nt][0], bf[nt][1], bf[nt + 1][0], bf[nt + 1][1],
                                 tc::SharedAddress(p));
                } else {
                  tc::LdMatrixX4Trans(bf[nt][0], bf[nt][1], bf[nt + 1][0], bf[nt + 1][1],
                                      tc::SharedAddress(p));
                }
              }
            }
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
              for (int nt = 0; nt < kNTiles; ++nt) tc::Mma16<Elem>(acc[mt][nt], af[mt], bf[nt]);
          } else {
            // tf32: scalar shared loads (no 32-bit ldmatrix.trans); strides keep them
            // conflict-free. 3xTF32 splits each operand once per k-step.
            constexpr bool k3x = kKind == MmaKind::k3xTf32;
            uint32_t ab[kMTiles][4], as[kMTiles][4];
            uint32_t bb[kNTiles][2], bsm[kNTiles][2];
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt) {
              const int row = m_base + mt * 16 + lg;
              float v[4];
              if constexpr (kSwizzle) {
                v[0] = a_stage[Tiling::AOffset(row, kb + lt)];
                v[1] = a_stage[Tiling::AOffset(row + 8, kb + lt)];
                v[2] = a_stage[Tiling::AOffset(row, kb + lt + 4)];
                v[3] = a_stage[Tiling::AOffset(row + 8, kb + lt + 4)];
              } else {
                const float* p = a_stage + row * Tiling::kAStride + kb + lt;
                v[0] = p[0], v[1] = p[8 * Tiling::kAStride], v[2] = p[4];
                v[3] = p[8 * Tiling::kAStride + 4];
              }
#pragma unroll
              for (int c = 0; c < 4; ++c) {
                if constexpr (k3x) {
                  tc::SplitTf32As<kSplit>(v[c], ab[mt][c], as[mt][c]);
                } else {
                  ab[mt][c] = tc::ToTf32(v[c]);
                }
              }
            }
#pragma unroll
            for (int nt = 0; nt < kNTiles; ++nt) {
              const int n = n_base + nt * 8 + lg;
              float v[2];
              if constexpr (kSwizzle && kTransW) {
                v[0] = w_stage[Tiling::WOffset(n, kb + lt)];
                v[1] = w_stage[Tiling::WOffset(n, kb + lt + 4)];
              } else if constexpr (kSwizzle) {
                v[0] = w_stage[Tiling::WOffset(kb + lt, n)];
                v[1] = w_stage[Tiling::WOffset(kb + lt + 4, n)];
              } else if constexpr (kTransW) {
                const float* p = w_stage + n * Tiling::kWStride + kb + lt;
                v[0] = p[0], v[1] = p[4];
              } else {
                const float* p = w_stage + (kb + lt) * Tiling::kWStride + n;
                v[0] = p[0], v[1] = p[4 * Tiling::kWStride];
              }
#pragma unroll
              for (int c = 0; c < 2; ++c) {
                if constexpr (k3x) {
                  tc::SplitTf32As<kSplit>(v[c], bb[nt][c], bsm[nt][c]);
                } else {
                  bb[nt][c] = tc::ToTf32(v[c]);
                }
              }
            }
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
              for (int nt = 0; nt < kNTiles; ++nt) {
                if constexpr (k3x) {
                  // Small cross terms first, so they are not lost under the big product.
                  tc::MmaTf32(acc[mt][nt], as[mt], bb[nt]);
                  tc::MmaTf32(acc[mt][nt], ab[mt], bsm[nt]);
                }
                tc::MmaTf32(acc[mt][nt], ab[mt], bb[nt]);
              }
          }
        }
      };

      for (int64_t window_begin = entry_begin; window_begin < entry_end;
           window_begin += Tiling::kEntryWindow) {
        window = static_cast<int>(min(entry_end - window_begin,
                                      static_cast<int64_t>(Tiling::kEntryWindow)));
        __syncthreads();  // every copy of the previous window has been issued
        StageEntries(staged, entries, window_begin, window, a_blocks, nnz);
        __syncthreads();
        const int64_t chunks = (static_cast<int64_t>(window) * taps * kBs + kKC - 1) / kKC;
        const int64_t my_chunks = chunks > kgroup ? (chunks - kgroup + kWarpsK - 1) / kWarpsK : 0;
        // Multi-stage pipeline: wait for chunk i, barrier (which also frees the stage consumed
        // at i-1), refill that stage with chunk i+kStages-1, then compute chunk i.
#pragma unroll
        for (int s = 0; s < kStages - 1; ++s) {
          if (s < my_chunks) load_chunk(kgroup + static_cast<int64_t>(s) * kWarpsK, s);
          tc::CpAsyncCommit();
        }
        for (int64_t i = 0; i < my_chunks; ++i) {
          tc::CpAsyncWait<kStages - 2>();
          group_sync();
          const int64_t prefetch = i + kStages - 1;
          if (prefetch < my_chunks) {
            load_chunk(kgroup + prefetch * kWarpsK, static_cast<int>(prefetch % kStages));
          }
          tc::CpAsyncCommit();
          compute_chunk(static_cast<int>(i % kStages));
        }
        tc::CpAsyncWait<0>();
        group_sync();  // the last stage is free before the next window refills it
      }

      const int m_base = warp_m * Tiling::kWM;
      const int n_base = warp_n * Tiling::kWN;
      if constexpr (kWarpsK > 1) {
        // The reduction buffer aliases the pipeline stages.
        __syncthreads();
        float* red = reinterpret_cast<float*>(smem_raw);
        if (kgroup > 0) {
          StoreFragmentSums<Tiling>(red + (kgroup - 1) * (kTM * Tiling::kRedStride), acc, m_base,
                                    n_base, lg, lt);
        }
        __syncthreads();
        if (kgroup == 0) {
#pragma unroll
          for (int k = 1; k < kWarpsK; ++k) {
            AddFragmentSums<Tiling>(red + (k - 1) * (kTM * Tiling::kRedStride), acc, m_base,
                                    n_base, lg, lt);
          }
        }
      }

      if (kgroup == 0) {
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int64_t row = row0 + m_base + mt * 16 + lg + 8 * h;
            if (row >= rows) continue;
            const int64_t base = (g * rows + row) * out_cols + out_block * kBs + n0 + n_base + 2 * lt;
#pragma unroll
            for (int nt = 0; nt < kNTiles; ++nt) {
              const float lo = acc[mt][nt][2 * h];
              const float hi = acc[mt][nt][2 * h + 1];
              if constexpr (Tiling::kHalf) {
                if (!out_f32) {
                  *reinterpret_cast<uint32_t*>(static_cast<Elem*>(args.out) + base + nt * 8) =
                      tc::PackPair<Elem>(lo, hi);
                  continue;
                }
              }
              *reinterpret_cast<float2*>(static_cast<float*>(args.out) + base + nt * 8) =
                  make_float2(lo, hi);
            }
          }
      }
      // The next tile refills the stages (and the reduction buffer) that others may still read.
      __syncthreads();
    }
  }
}

// Launches one instantiation of the kernel, with its shared memory opted in once per device.
template <MmaKind kKind, int kBs, bool kTransW, int kTM, int kWarpsM, int kWarpsN, int kWarpsK,
          int kStages, bool kConv, bool kSwizzle = false, int kMinCtasWanted = 0,
          tc::Tf32Split kSplit = tc::Tf32Split::kCvt>
cudaError_t LaunchTc(const BsmmArgs& args, const ConvGather& conv, bool out_f32,
                     cudaStream_t stream) {
  using Tiling = TcTiling<kKind, kBs, kTransW, kTM, kWarpsM, kWarpsN, kWarpsK, kStages, kSwizzle>;
  auto kernel = BsmmTcKernel<kKind, kBs, kTransW, kTM, kWarpsM, kWarpsN, kWarpsK, kStages, kConv,
                             kSwizzle, kMinCtasWanted, kSplit>;
  const int64_t grid_x = args.out_blocks * Tiling::kNSplit;
  if (grid_x > kMaxGridX) return cudaErrorNotSupported;
  constexpr int kSmem = Tiling::kSmemBytes;
  static_assert(kSmem <= 227 * 1024, "shared memory per block");
  if constexpr (kSmem > 48 * 1024) {
    static std::atomic<uint64_t> done_devices{0};
    if (OptInSharedMemory(reinterpret_cast<const void*>(kernel), kSmem, done_devices) !=
        cudaSuccess) {
      return cudaErrorNotSupported;
    }
  }
  const int64_t row_tiles = (args.rows + kTM - 1) / kTM;
  const dim3 grid(static_cast<unsigned>(grid_x),
                  static_cast<unsigned>(std::min(row_tiles, kMaxGridYZ)),
                  static_cast<unsigned>(std::min(args.groups, kMaxGridYZ)));
  kernel<<<grid, Tiling::kThreads, kSmem, stream>>>(args, conv, row_tiles, out_f32);
  return cudaSuccess;
}

template <MmaKind kKind, int kBs, bool kTransW, bool kConv>
cudaError_t LaunchRegime(const BsmmArgs& args, const ConvGather& conv, bool out_f32,
                         cudaStream_t stream) {
  constexpr bool kHalf = sizeof(ElemOf<kKind>) == 2;
  if (args.rows <= 32) {
    // W-streaming regime: 4 single-warp k-groups over a 32-row tile.
    if constexpr (kHalf && kBs >= 32 && !kConv) {
      // Swizzled unpadded stages: one more stage in flight at the same 3 CTAs per SM, 1.6x at
      // seed d = 1/4 (benchmarks/NOTES.md, v3a).
      return LaunchTc<kKind, kBs, kTransW, 32, 1, 1, 4, 4, kConv, true>(args, conv, out_f32,
                                                                        stream);
    }
    if constexpr (!kHalf && kBs == 32 && !kConv) {
      // float32: unpadded swizzled 128-byte rows make a stage 8 KB instead of 9.5 (an
      // untransposed w's k-major reads need a 40-word pitch), so with 2 stages per k-group the
      // CTA's 66 KB fit 3 per SM: the seed's 384 CTAs in one wave (396 slots on an H200)
      // instead of 1.45. Seed float32 HIGHEST matmul d = 1/4: 101 -> 85.6 us (NOTES v9a). bs 32
      // only: at 64 and 128 the 168-register cap of 3 CTAs spills.
      if constexpr (kKind == MmaKind::k3xTf32) {
        // Experiments tf32_split_rounded / tf32_split_truncated (NOTES v31): the operand splits
        // in 7 or 4 instructions instead of 9, where the seed's float32 HIGHEST cells run far
        // below the bandwidth that bf16 reaches on the same tile.
        static const bool truncated = ExperimentEnabled("tf32_split_truncated");
        static const bool rounded = ExperimentEnabled("tf32_split_rounded");
        if (truncated) {
          return LaunchTc<kKind, kBs, kTransW, 32, 1, 1, 4, 2, kConv, true, 0,
                          tc::Tf32Split::kTruncatedBig>(args, conv, out_f32, stream);
        }
        if (rounded) {
          return LaunchTc<kKind, kBs, kTransW, 32, 1, 1, 4, 2, kConv, true, 0,
                          tc::Tf32Split::kRoundedSmall>(args, conv, out_f32, stream);
        }
      }
      return LaunchTc<kKind, kBs, kTransW, 32, 1, 1, 4, 2, kConv, true>(args, conv, out_f32,
                                                                        stream);
    }
    return LaunchTc<kKind, kBs, kTransW, 32, 1, 1, 4, kHalf ? 3 : 2, kConv>(args, conv, out_f32,
                                                                           stream);
  }
  if constexpr (kHalf && kBs == 32 && !kConv) {
    // Experiment `w_stream_64_one_wave` (NOTES v30): the 64-row W-streaming tile with 3 stages
    // per k-group and registers capped for 3 CTAs per SM (74 KB each), so the seed64 grid of
    // 384 columns is one wave of 396 slots; today's 4-stage tile holds 2 per SM (229 registers,
    // 98 KB): 1.45 waves at d >= 1/16, and 33-64 rows at d = 1/64 run two 32-row tiles, 768
    // CTAs in 1.94 waves.
    static const bool one_wave = ExperimentEnabled("w_stream_64_one_wave");
    if (one_wave && args.rows <= 64) {
      return LaunchTc<kKind, kBs, kTransW, 64, 1, 1, 4, 3, kConv, true, 3>(args, conv, out_f32,
                                                                           stream);
    }
  }
  if constexpr (kHalf && kBs >= 32 && !kConv) {
    // 33-64 rows over columns of fewer than 16 blocks as two 32-row W-streaming tiles (grid.y =
    // 2; NOTES v27), the tile that runs seed d = 1/64 at 6.1 us for 32 rows, where the 128-row
    // tile below took 11.0 us for 64 rows on an H100 (this: 10.0; torch's Triton BSR: 8.6).
    // `no_w_stream_32_row_tiles` keeps the 128-row tile.
    static const bool w_stream_32_row_tiles = !ExperimentEnabled("no_w_stream_32_row_tiles");
    if (w_stream_32_row_tiles && args.rows <= 64 && args.nnz < 16 * args.out_blocks) {
      return LaunchTc<kKind, kBs, kTransW, 32, 1, 1, 4, 4, kConv, true>(args, conv, out_f32,
                                                                        stream);
    }
  }
  if constexpr (kHalf && kBs >= 32 && !kConv) {
    // W streaming up to 64 rows (4 single-warp k-groups over a 64-row tile), where the
    // row-tiled regime wastes half its 128 rows: 1.5x at M = 64, d = 1/4 and 1/16 (NOTES, v5d).
    // Columns averaging fewer than 16 blocks leave the four k-groups a chunk or two each, and
    // there it measured no faster by the marginal time either (d = 1/64: 12.9-13.7 us
    // row-tiled, 14.7 with this tile; NOTES v8b), so they stay row-tiled.
    if (args.rows <= 64 && args.nnz >= 16 * args.out_blocks) {
      return LaunchTc<kKind, kBs, kTransW, 64, 1, 1, 4, 4, kConv, true>(args, conv, out_f32,
                                                                        stream);
    }
  }
  if constexpr (kHalf && !kConv && kBs == 16) {
    // Experiment `wgmma_tma_bs16` (NOTES v25): v17's TMA + wgmma tile below at bs 16, against
    // the mma.sync row tile at the end (small d = 1/8: 179 us on an H200, 0.47x of dense).
    static const bool wgmma_tma_bs16 = ExperimentEnabled("wgmma_tma_bs16");
    if (wgmma_tma_bs16 && args.rows > 128 && WgmmaAvailable()) {
      const cudaError_t status = LaunchWgmmaTmaRows<kKind, kTransW, 16>(args, out_f32, stream);
      if (status != cudaErrorNotSupported) return status;
    }
  }
  if constexpr (kHalf && !kConv && kBs == 8) {
    // 128 x 128 output tiles over the union of 16 block-columns, as dense 32-wide k panels
    // (bsmm_union_panel_kernel.cuh): small bs 8 d = 1/8 matmul 493 -> 256 us. At bs 16 it tied
    // and at bs 32 it lost, so those stay on one column per CTA (NOTES v13 measured).
    if (args.rows > 64) return LaunchUnionPanels<kKind, kBs, kTransW>(args, out_f32, stream);
  }
  if constexpr (kHalf && !kConv && kBs == 32) {
    // sm_90a: 256-row tiles on wgmma, their stages filled by TMA from a producer warp (NOTES
    // v17). Wide d = 1/4 matmul 537 -> 302 us, d = 1/16 178 -> 115 on an H200; the cp.async-fed
    // wgmma kernels (v15, v16, v18) measured 1.7-3x slower than this one, and the union of 8
    // columns on the same machinery (v19) 1.6-2.1x slower. Shapes past a tensor map's limits
    // fall back to the mma.sync tiles below.
    if (args.rows > 128 && WgmmaAvailable()) {
      const cudaError_t status = LaunchWgmmaTmaRows<kKind, kTransW>(args, out_f32, stream);
      if (status != cudaErrorNotSupported) return status;
    }
  }
  if constexpr (kHalf && !kConv && kBs == 32) {
    if (args.rows > 64) {
      // 256-row tiles of 8 warps: each w block copied to shared memory serves twice the rows
      // and each barrier twice the mma (wide d = 1/4: 558 -> 540 us matmul, 553 -> 522
      // matmul_t). Taken for columns of at least 16 blocks on average (at d = 1/16, 8 per
      // column, it measured 190 us against 182 for the tile below) and where its tiles still
      // give every CTA slot of the card (2 per SM) work. Otherwise the 128-row tile capped at
      // 128 registers, so that 4 CTAs fit per SM (ptxas gives the uncapped one 131-140: 3 per
      // SM; wide d = 1/16: 187 -> 182 us, 1/4: 558 -> 547).
      const int64_t tiles_256 = (args.rows + 255) / 256 * args.out_blocks * args.groups;
      if (args.rows > 128 && args.nnz >= 16 * args.out_blocks &&
          tiles_256 >= 2 * MultiprocessorCount()) {
        return LaunchTc<kKind, kBs, kTransW, 256, 8, 1, 1, 4, kConv>(args, conv, out_f32, stream);
      }
      return LaunchTc<kKind, kBs, kTransW, 128, 4, 1, 1, 4, kConv, false, 4>(args, conv, out_f32,
                                                                            stream);
    }
  }
  // Row-tiled regime: 128 rows, 4 warps in one k-group.
  constexpr int kWarpsN = kBs >= 64 ? 2 : 1;
  return LaunchTc<kKind, kBs, kTransW, 128, 4 / kWarpsN, kWarpsN, 1, kHalf ? 4 : 3, kConv>(
      args, conv, out_f32, stream);
}

template <MmaKind kKind, bool kConv>
cudaError_t LaunchKind(const BsmmArgs& args, const ConvGather& conv, bool out_f32,
                       cudaStream_t stream) {
  const bool t = args.transpose_w;
  switch (args.block_size) {
#define JBS_BS_CASE(BS)                                                              \
  case BS:                                                                           \
    return t ? LaunchRegime<kKind, BS, true, kConv>(args, conv, out_f32, stream)     \
             : LaunchRegime<kKind, BS, false, kConv>(args, conv, out_f32, stream);
    JBS_BS_CASE(8)
    JBS_BS_CASE(16)
    JBS_BS_CASE(32)
    JBS_BS_CASE(64)
    JBS_BS_CASE(128)
#undef JBS_BS_CASE
    default: return cudaErrorNotSupported;
  }
}

#define JBS_BSMM_TC_KINDS(X) \
  X(MmaKind::kBf16)         \
  X(MmaKind::kF16)          \
  X(MmaKind::kTf32)         \
  X(MmaKind::k3xTf32)

// Instantiated once each, in bsmm_tc_<kind>.cu.
#define JBS_BSMM_TC_EXTERN(KIND)                                                            \
  extern template cudaError_t LaunchKind<KIND, false>(const BsmmArgs&, const ConvGather&,  \
                                                      bool, cudaStream_t);                 \
  extern template cudaError_t LaunchKind<KIND, true>(const BsmmArgs&, const ConvGather&,   \
                                                     bool, cudaStream_t);
JBS_BSMM_TC_KINDS(JBS_BSMM_TC_EXTERN)
#undef JBS_BSMM_TC_EXTERN

#define JBS_BSMM_TC_INSTANTIATE(KIND)                                                 \
  template cudaError_t LaunchKind<KIND, false>(const BsmmArgs&, const ConvGather&,   \
                                               bool, cudaStream_t);                  \
  template cudaError_t LaunchKind<KIND, true>(const BsmmArgs&, const ConvGather&,    \
                                              bool, cudaStream_t);

}  // namespace bsmm_tc
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_TENSOR_CORE_KERNEL_CUH_
