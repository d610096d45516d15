// Halo-tile implicit GEMM for stride-1 block-sparse convolutions (jbs_conv, forward and input
// gradient).
//
// The gather kernel (bsmm_tensor_core.cu) copies each tap's input rows from global memory, so
// x crosses L2 once per (input block, tap). Here a CTA owns `tile_rows` whole output rows of one
// (image, depth) slice, 128 positions at most, and one output block-column. For each input
// block of that column it stages, in one pipeline stage, the input halo the tile needs (every
// tap's shifted window at once) and the block's filter taps; all taps then read the halo in
// shared memory. With unit strides, the halo row that output position (oh, ow) reads for tap t
// is (oh * halo_w + ow) + offset(t), and ldmatrix takes a row address per lane, so the per-tap
// gather is one add. x crosses L2 once per input block instead of once per (block, tap).
//
// Both directions are one formula per dimension: the source position of output position o and
// tap t is o + base + t * step, with (base, step) = (-pad, +dilation) for the forward
// convolution and (+pad, -dilation) for the input gradient (whose filter blocks are applied
// transposed, as matmul_t does). Reduction order: entries ascending, taps ascending, then the
// block's channels; no atomics.
#include "conv_halo_tensor_core.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "launch_util.h"
#include "tensor_core.cuh"

namespace jbs {
namespace {

constexpr int kBs = 32;          // block size (one output block-column per CTA)
constexpr int kTM = 128;         // output positions per CTA
constexpr int kWarps = 4;        // warp w owns positions [32 w, 32 w + 32) x all 32 channels
constexpr int kThreads = 32 * kWarps;
constexpr int kPitch = kBs + 8;  // 80-byte rows: 8 consecutive rows hit 8 distinct bank groups
constexpr int kUnits = kBs / 8;  // 16-byte units per row
constexpr int kMaxHalo = 256;    // halo positions per stage
constexpr int kMaxTaps = 9;
constexpr int kStages = 2;
constexpr int kHaloElems = kMaxHalo * kPitch;
constexpr int kTapElems = kBs * kPitch;
constexpr int kStageElems = kHaloElems + kMaxTaps * kTapElems;
constexpr int kSmemBytes = kStages * kStageElems * 2;
constexpr int64_t kMaxGridY = 65535;
static_assert(kBs * kUnits == kThreads, "each thread of a tap group copies one unit of a tap");
static_assert(kSmemBytes <= 227 * 1024, "shared memory per block");

struct HaloGeometry {
  int32_t a_spatial[3];    // source extents (Da, Ha, Wa)
  int32_t out_spatial[3];  // (Do, Ho, Wo)
  int32_t kernel[3];
  int32_t base[3];         // source offset of tap 0
  int32_t step[3];         // source offset per tap index
  int32_t origin[3];       // smallest source offset over the taps: the halo's first position
  int32_t halo[3];         // halo extents (taps of depth x rows x row width)
  int32_t tile_rows;       // output rows per CTA
  int32_t tiles_per_slice;
  int32_t taps;
  int32_t halo_positions;
};

// Halo rows between tap t's window and the halo's first position.
__device__ __forceinline__ int TapOffset(const HaloGeometry& geo, int tap) {
  const int t[3] = {tap / (geo.kernel[1] * geo.kernel[2]), (tap / geo.kernel[2]) % geo.kernel[1],
                    tap % geo.kernel[2]};
  int rel[3];
  for (int d = 0; d < 3; ++d) rel[d] = geo.base[d] + t[d] * geo.step[d] - geo.origin[d];
  return (rel[0] * geo.halo[1] + rel[1]) * geo.halo[2] + rel[2];
}

// Element offset of input position (od + origin + hd, oh0 + origin + hh, origin + hw) of image n
// for halo position `pos`, in rows of `a_spatial`; -1 where that position is padding.
__device__ __forceinline__ int64_t HaloSourceRow(const HaloGeometry& geo, int pos, int64_t n,
                                                 int od, int oh0) {
  const int hw = pos % geo.halo[2];
  const int hh = (pos / geo.halo[2]) % geo.halo[1];
  const int hd = pos / (geo.halo[2] * geo.halo[1]);
  const int src[3] = {od + geo.origin[0] + hd, oh0 + geo.origin[1] + hh, geo.origin[2] + hw};
  for (int d = 0; d < 3; ++d) {
    if (src[d] < 0 || src[d] >= geo.a_spatial[d]) return -1;
  }
  return ((n * geo.a_spatial[0] + src[0]) * geo.a_spatial[1] + src[1]) * geo.a_spatial[2] + src[2];
}

// Two tap groups of 4 warps share a CTA's stages and output tile, group q multiplying taps q,
// q + 2, ...; group 1 hands its sums to group 0 through shared memory at the tile's end, in a
// fixed order. Nsight put the one-group kernel at 2 CTAs (8 warps) per SM, limited by its 87 KB
// of stages, issuing 0.43 instructions per scheduler-cycle with 2 warps each: latency-bound. Two
// groups double the warps at the same shared memory (526-530 -> 499-507 us, NOTES v7c).
constexpr int kTapGroups = 2;

template <typename Elem>
__global__ void __launch_bounds__(kThreads * kTapGroups)
    ConvHaloKernel(BsmmArgs args, HaloGeometry geo, bool transposed, bool out_f32) {
  constexpr int kCtaThreads = kThreads * kTapGroups;
  constexpr int kHaloSlots = kMaxHalo * kUnits / kCtaThreads;  // halo copies per thread per stage
  static_assert(kMaxHalo * kUnits % kCtaThreads == 0);
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* smem = reinterpret_cast<Elem*>(smem_raw);
  __shared__ int tap_offset[kMaxTaps];  // halo rows between tap t's window and the halo start

  const Elem* __restrict__ a = static_cast<const Elem*>(args.a);
  const Elem* __restrict__ w = static_cast<const Elem*>(args.w);
  const int32_t* __restrict__ entries = args.entries;
  const int64_t a_cols = args.a_cols;
  const int64_t a_blocks = a_cols / kBs;
  const int64_t nnz = args.nnz;
  const int64_t out_cols = args.out_blocks * kBs;
  const int taps = geo.taps;
  const int wo = geo.out_spatial[2];
  const int halo_w = geo.halo[2];

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int tap_group = tid / kThreads;
  const int warp = (tid % kThreads) >> 5;  // positions [32 warp, +32)
  const int lg = lane >> 2;
  const int lt = lane & 3;

  if (tid < taps) tap_offset[tid] = TapOffset(geo, tid);

  const int64_t out_block = blockIdx.x;
  const int64_t entry_begin =
      min(max(static_cast<int64_t>(__ldg(args.offsets + out_block)), int64_t{0}), nnz);
  const int64_t entry_end = min(
      max(static_cast<int64_t>(__ldg(args.offsets + out_block + 1)), entry_begin), nnz);
  const int64_t tiles = args.rows / (static_cast<int64_t>(geo.out_spatial[1]) * wo) *
                        geo.tiles_per_slice;  // (batch x Do) slices x tiles per slice
  __syncthreads();  // tap_offset

  for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
    const Elem* a_group = a + g * args.a_rows * a_cols;
    const Elem* w_group = w + g * nnz * taps * (kBs * kBs);
    for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
      const int64_t slice = tile / geo.tiles_per_slice;  // n * Do + od
      const int oh0 = static_cast<int>(tile % geo.tiles_per_slice) * geo.tile_rows;
      const int64_t n = slice / geo.out_spatial[0];
      const int od = static_cast<int>(slice % geo.out_spatial[0]);

      // Halo rows this thread copies (the same for every entry): element offset of channel
      // (unit * 8) of that input position in a_group, or -1 where it is padding.
      int64_t halo_src[kHaloSlots];
#pragma unroll
      for (int j = 0; j < kHaloSlots; ++j) {
        const int idx = tid + j * kCtaThreads;
        const int pos = idx / kUnits;
        halo_src[j] = -1;
        if (pos < geo.halo_positions) {
          const int64_t row = HaloSourceRow(geo, pos, n, od, oh0);
          if (row >= 0) halo_src[j] = row * a_cols + (idx % kUnits) * 8;
        }
      }

      auto load_entry = [&](int64_t e, int stage) {
        Elem* halo_stage = smem + stage * kStageElems;
        Elem* w_stage = halo_stage + kHaloElems;
        const int2 pair = __ldg(reinterpret_cast<const int2*>(entries) + e);
        // A corrupt table entry reads as a zero block instead of out of bounds.
        const bool valid = pair.x >= 0 && pair.x < a_blocks && pair.y >= 0 && pair.y < nnz;
        const int64_t a_col = valid ? static_cast<int64_t>(pair.x) * kBs : 0;
#pragma unroll
        for (int j = 0; j < kHaloSlots; ++j) {
          const int idx = tid + j * kCtaThreads;
          if (idx / kUnits >= geo.halo_positions) break;
          const bool live = valid && halo_src[j] >= 0;
          const Elem* src = live ? a_group + halo_src[j] + a_col : a;
          tc::CpAsync16(
              tc::SharedAddress(halo_stage + (idx / kUnits) * kPitch + (idx % kUnits) * 8), src,
              live);
        }
        // Thread tid of tap group q copies unit (tid % 4) of row (tid / 4) % 32 of taps q,
        // q + kTapGroups, ..., verbatim.
        const int row = (tid % kThreads) / kUnits;
        const int unit = tid % kUnits;
        const Elem* block = w_group + (valid ? static_cast<int64_t>(pair.y) * taps : 0) * (kBs * kBs);
        for (int t = tap_group; t < taps; t += kTapGroups) {
          tc::CpAsync16(
              tc::SharedAddress(w_stage + t * kTapElems + row * kPitch + unit * 8),
              valid ? block + (t * kBs + row) * kBs + unit * 8 : w, valid);
        }
      };

      float acc[2][4][4];
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.f;

      // This lane's ldmatrix rows for tap 0 (positions past the tile read row 0; their
      // results are never stored).
      int a_row[2];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const int r = warp * 32 + mt * 16 + (lane & 15);
        const int oh_local = r / wo;
        const bool live = oh_local < geo.tile_rows && oh0 + oh_local < geo.out_spatial[1];
        a_row[mt] = live ? oh_local * halo_w + r % wo : 0;
      }

      auto compute_entry = [&](int stage) {
        const Elem* halo_stage = smem + stage * kStageElems;
        const Elem* w_stage = halo_stage + kHaloElems;
        const int mi = lane >> 3;
        const int rr = lane & 7;
        for (int t = tap_group; t < taps; t += kTapGroups) {
          const int offset = tap_offset[t];
          const Elem* w_tap = w_stage + t * kTapElems;
#pragma unroll
          for (int kb = 0; kb < kBs; kb += 16) {
            uint32_t af[2][4];
            uint32_t bf[4][2];
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
              const Elem* p = halo_stage + (a_row[mt] + offset) * kPitch + kb + (lane >> 4) * 8;
              tc::LdMatrixX4(af[mt][0], af[mt][1], af[mt][2], af[mt][3], tc::SharedAddress(p));
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt += 2) {
              const int col = (nt + (mi >> 1)) * 8;
              if (transposed) {
                // B[k][n] = W[n][k]: rows of the stored block are n.
                const Elem* p = w_tap + (col + rr) * kPitch + kb + (mi & 1) * 8;
                tc::LdMatrixX4(bf[nt][0], bf[nt][1], bf[nt + 1][0], bf[nt + 1][1],
                               tc::SharedAddress(p));
              } else {
                const Elem* p = w_tap + (kb + (mi & 1) * 8 + rr) * kPitch + col;
                tc::LdMatrixX4Trans(bf[nt][0], bf[nt][1], bf[nt + 1][0], bf[nt + 1][1],
                                    tc::SharedAddress(p));
              }
            }
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
              for (int nt = 0; nt < 4; ++nt) {
                tc::Mma16<Elem>(acc[mt][nt], af[mt], bf[nt]);
              }
          }
        }
      };

      // Double buffer over the column's entries: the next entry's copies fly while this one's
      // taps are multiplied.
      const int64_t count = entry_end - entry_begin;
      if (count > 0) load_entry(entry_begin, 0);
      tc::CpAsyncCommit();
      for (int64_t i = 0; i < count; ++i) {
        if (i + 1 < count) load_entry(entry_begin + i + 1, static_cast<int>((i + 1) % kStages));
        tc::CpAsyncCommit();
        tc::CpAsyncWait<1>();
        __syncthreads();
        compute_entry(static_cast<int>(i % kStages));
        __syncthreads();  // the stage is refilled two entries later
      }
      tc::CpAsyncWait<0>();

      // Group 1's sums cross over the (now idle) stages; group 0 adds them to its own.
      constexpr int kRedStride = kBs + 4;
      static_assert(kTM * kRedStride * 4 <= kStageElems * 2, "the sums fit in a stage");
      float2* red = reinterpret_cast<float2*>(smem_raw);
      // The pair of sums at (mt, h, nt) of this lane's fragment, as the accumulators hold it.
      auto cell = [&](int mt, int h, int nt) {
        return red + ((warp * 32 + mt * 16 + lg + 8 * h) * kRedStride + nt * 8 + 2 * lt) / 2;
      };
      auto cross = [&](bool add) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
              float* pair = &acc[mt][nt][2 * h];
              if (add) {
                const float2 other = *cell(mt, h, nt);
                pair[0] += other.x;
                pair[1] += other.y;
              } else {
                *cell(mt, h, nt) = make_float2(pair[0], pair[1]);
              }
            }
      };
      if (tap_group == 1) cross(/*add=*/false);
      __syncthreads();
      if (tap_group == 0) cross(/*add=*/true);
      __syncthreads();  // the next tile's first copies overwrite the sums

#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if (tap_group != 0) break;
          const int r = warp * 32 + mt * 16 + lg + 8 * h;
          const int oh_local = r / wo;
          const int oh = oh0 + oh_local;
          if (oh_local >= geo.tile_rows || oh >= geo.out_spatial[1]) continue;
          const int64_t row = (slice * geo.out_spatial[1] + oh) * wo + r % wo;
          const int64_t base = (g * args.rows + row) * out_cols + out_block * kBs + 2 * lt;
#pragma unroll
          for (int nt = 0; nt < 4; ++nt) {
            const float lo = acc[mt][nt][2 * h];
            const float hi = acc[mt][nt][2 * h + 1];
            if (out_f32) {
              *reinterpret_cast<float2*>(static_cast<float*>(args.out) + base + nt * 8) =
                  make_float2(lo, hi);
            } else {
              *reinterpret_cast<uint32_t*>(static_cast<Elem*>(args.out) + base + nt * 8) =
                  tc::PackPair<Elem>(lo, hi);
            }
          }
        }
    }
  }
}

template <typename Elem>
cudaError_t Launch(const BsmmArgs& args, const HaloGeometry& geo, bool transposed, bool out_f32,
                   cudaStream_t stream) {
  auto kernel = ConvHaloKernel<Elem>;
  static std::atomic<uint64_t> done_devices{0};
  if (OptInSharedMemory(reinterpret_cast<const void*>(kernel), kSmemBytes, done_devices) !=
      cudaSuccess) {
    return cudaErrorNotSupported;
  }
  const int64_t tiles =
      args.rows / (static_cast<int64_t>(geo.out_spatial[1]) * geo.out_spatial[2]) *
      geo.tiles_per_slice;
  const dim3 grid(static_cast<unsigned>(args.out_blocks),
                  static_cast<unsigned>(std::min(tiles, kMaxGridY)),
                  static_cast<unsigned>(std::min<int64_t>(args.groups, kMaxGridY)));
  kernel<<<grid, kThreads * kTapGroups, kSmemBytes, stream>>>(args, geo, transposed, out_f32);
  return cudaSuccess;
}

// --- filter gradient -------------------------------------------------------------------------
// dw[g, k, t] = sum over output positions p of x[src(p, t), block i_k].T @ dy[p, block j_k], with
// the forward geometry. A CTA owns one block pair k and one segment of the tiles of output
// positions; per tile it stages x's halo for block-row i_k and dy's tile for block-column j_k,
// and warp t accumulates tap t's 32 x 32 block over the tile (mma A = the halo rows of tap t,
// transposed; B = dy's rows), so x crosses L2 once per (block, tile) instead of once per
// (block, tap, tile). One segment per block pair left a CTA per SM walking hundreds of tiles
// with a single tile in flight (1107 us on the issue's config, NOTES v5c); with several, the
// segments' float sums are added in segment order by AddSegments: deterministic, no atomics.
// Positions past the tile's end read dy as zero (and halo row 0).
constexpr int kDwWarps = kMaxTaps;  // warp t owns tap t
constexpr int kDwThreads = 32 * kDwWarps;
constexpr int kDyElems = kTM * kPitch;
constexpr int kDwStageElems = kHaloElems + kDyElems;
constexpr int kDwSmemBytes = kStages * kDwStageElems * 2;  // 60 KB
static_assert(kDwSmemBytes <= 227 * 1024, "shared memory per block");
// Copy slots per thread and tile: halo units (idx = tid + j * kDwThreads < kMaxHalo * kUnits) and
// dy units (< kTM * kUnits). A slot's unit is tid % kUnits in every slot (kDwThreads % kUnits == 0).
constexpr int kDwHaloSlots = (kMaxHalo * kUnits + kDwThreads - 1) / kDwThreads;
constexpr int kDwDySlots = (kTM * kUnits + kDwThreads - 1) / kDwThreads;
static_assert(kDwThreads % kUnits == 0 && kMaxHalo <= 256 && kTM <= 256,
              "a slot's unit is fixed; halo and tile coordinates pack into 8 bits each");

// The tile-independent part of every copy's address (the halo position's (depth, row, column)
// within the halo, the dy row's (row, column) within the tile) is decomposed once per CTA, not
// once per tile. Nsight put the per-tile decomposition at ~870 issued instructions per warp per
// tile against ~150 for the mma work; hoisting it took the issue's filter gradient from 629 to
// 439 us (NOTES v7a). Two CTAs per SM: 113 registers at most.
template <typename Elem, typename Out>
__global__ void __launch_bounds__(kDwThreads, 2)
    ConvDwHaloKernel(ConvDwArgs args, HaloGeometry geo) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* smem = reinterpret_cast<Elem*>(smem_raw);

  const Elem* __restrict__ x = static_cast<const Elem*>(args.x);
  const Elem* __restrict__ dy = static_cast<const Elem*>(args.dy);
  const int taps = geo.taps;
  const int wo = geo.out_spatial[2];
  const int ho = geo.out_spatial[1];
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int warp = tid >> 5;

  const int64_t k = blockIdx.x;
  const int32_t i = __ldg(args.coords + 2 * k);
  const int32_t j = __ldg(args.coords + 2 * k + 1);
  // A corrupt coordinate yields a zero block instead of an out-of-bounds read.
  const bool valid = i >= 0 && i < args.x_cols / kBs && j >= 0 && j < args.dy_cols / kBs;
  const int64_t x_col = valid ? static_cast<int64_t>(i) * kBs : 0;
  const int64_t dy_col = valid ? static_cast<int64_t>(j) * kBs : 0;
  const int64_t all_tiles = args.dy_rows / (static_cast<int64_t>(ho) * wo) * geo.tiles_per_slice;
  const int64_t segment = blockIdx.z;
  const int64_t first_tile = all_tiles * segment / args.segments;
  const int64_t tiles = all_tiles * (segment + 1) / args.segments - first_tile;
  const int offset = warp < taps ? TapOffset(geo, warp) : 0;

  // Halo row (tap 0) of the tile position this lane addresses in the A fragments of k-step s:
  // positions 16 s + (lane & 7) + 8 (lane >> 4), ldmatrix.trans rows.
  int a_row[kTM / 16];
#pragma unroll
  for (int step = 0; step < kTM / 16; ++step) {
    const int r = 16 * step + (lane & 7) + ((lane >> 4) << 3);
    const int oh_local = r / wo;
    a_row[step] = oh_local < geo.tile_rows ? oh_local * geo.halo[2] + r % wo : 0;
  }

  // This thread's copies, decomposed once. Halo slot j: (hd << 16 | hh << 8 | hw) of
  // halo position (tid + j * kDwThreads) / kUnits, or -1 past the halo. dy slot j: (oh_local << 8
  // | ow) of tile row (tid + j * kDwThreads) / kUnits, or -1 past the tile's rows.
  const int unit = tid % kUnits;
  int halo_code[kDwHaloSlots];
  int dy_code[kDwDySlots];
#pragma unroll
  for (int j = 0; j < kDwHaloSlots; ++j) {
    const int pos = (tid + j * kDwThreads) / kUnits;
    const int hw = pos % geo.halo[2];
    const int hh = (pos / geo.halo[2]) % geo.halo[1];
    const int hd = pos / (geo.halo[2] * geo.halo[1]);
    halo_code[j] = pos < geo.halo_positions ? (hd << 16) | (hh << 8) | hw : -1;
  }
#pragma unroll
  for (int j = 0; j < kDwDySlots; ++j) {
    const int r = (tid + j * kDwThreads) / kUnits;
    const int oh_local = r / wo;
    dy_code[j] = r < kTM && oh_local < geo.tile_rows ? (oh_local << 8) | (r % wo) : -1;
  }

  for (int64_t g = blockIdx.y; g < args.groups; g += gridDim.y) {
    const Elem* x_g = x + g * args.x_rows * args.x_cols;
    const Elem* dy_g = dy + g * args.dy_rows * args.dy_cols;

    auto load_tile = [&](int64_t local_tile, int stage) {
      const int64_t tile = first_tile + local_tile;
      Elem* halo_stage = smem + stage * kDwStageElems;
      Elem* dy_stage = halo_stage + kHaloElems;
      const int64_t slice = tile / geo.tiles_per_slice;  // n * Do + od
      const int oh0 = static_cast<int>(tile % geo.tiles_per_slice) * geo.tile_rows;
      const int64_t n = slice / geo.out_spatial[0];
      const int od = static_cast<int>(slice % geo.out_spatial[0]);
      // The source of halo position (hd, hh, hw) is (od, oh0, 0) + origin + (hd, hh, hw).
      const int d0 = od + geo.origin[0];
      const int h0 = oh0 + geo.origin[1];
      const int w0 = geo.origin[2];
      const int64_t image_base = n * geo.a_spatial[0];
#pragma unroll
      for (int j = 0; j < kDwHaloSlots; ++j) {
        const int code = halo_code[j];
        if (code < 0) break;  // slots past the halo stay past it
        const int sd = d0 + (code >> 16);
        const int sh = h0 + ((code >> 8) & 255);
        const int sw = w0 + (code & 255);
        const bool live = valid && sd >= 0 && sd < geo.a_spatial[0] && sh >= 0 &&
                          sh < geo.a_spatial[1] && sw >= 0 && sw < geo.a_spatial[2];
        const int64_t row = ((image_base + sd) * geo.a_spatial[1] + sh) * geo.a_spatial[2] + sw;
        const int pos = (tid + j * kDwThreads) / kUnits;
        const Elem* src = live ? x_g + row * args.x_cols + x_col + unit * 8 : x;
        tc::CpAsync16(tc::SharedAddress(halo_stage + pos * kPitch + unit * 8), src, live);
      }
      const int64_t slice_row = slice * ho + oh0;
#pragma unroll
      for (int j = 0; j < kDwDySlots; ++j) {
        const int r = (tid + j * kDwThreads) / kUnits;
        if (r >= kTM) break;
        const int code = dy_code[j];
        const int oh_local = code >> 8;
        const bool live = valid && code >= 0 && oh0 + oh_local < ho;
        const int64_t row = (slice_row + oh_local) * wo + (code & 255);
        const Elem* src = live ? dy_g + row * args.dy_cols + dy_col + unit * 8 : dy;
        tc::CpAsync16(tc::SharedAddress(dy_stage + r * kPitch + unit * 8), src, live);
      }
    };

    float acc[2][4][4];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[mi][ni][c] = 0.f;

    auto compute_tile = [&](int stage) {
      if (warp >= taps) return;
      const Elem* halo_stage = smem + stage * kDwStageElems;
      const Elem* dy_stage = halo_stage + kHaloElems;
#pragma unroll
      for (int step = 0; step < kTM / 16; ++step) {
        uint32_t af[2][4];
        uint32_t bf[4][2];
        // A[ci][p] = halo[a_row(p) + offset][ci]: the halo is position-major, so .trans.
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          const int c = mi * 16 + (((lane >> 3) & 1) << 3);
          tc::LdMatrixX4Trans(af[mi][0], af[mi][1], af[mi][2], af[mi][3],
                              tc::SharedAddress(halo_stage + (a_row[step] + offset) * kPitch + c));
        }
        // B[p][co] = dy_tile[p][co], position-major as well.
#pragma unroll
        for (int nj = 0; nj < 2; ++nj) {
          const int r = 16 * step + (lane & 7) + (((lane >> 3) & 1) << 3);
          const int c = nj * 16 + ((lane >> 4) << 3);
          tc::LdMatrixX4Trans(bf[2 * nj][0], bf[2 * nj][1], bf[2 * nj + 1][0], bf[2 * nj + 1][1],
                              tc::SharedAddress(dy_stage + r * kPitch + c));
        }
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) {
            tc::Mma16<Elem>(acc[mi][ni], af[mi], bf[ni]);
          }
      }
    };

    // Double buffer over the tiles: the next tile's copies fly while this one is multiplied.
    if (tiles > 0) load_tile(0, 0);
    tc::CpAsyncCommit();
    for (int64_t t = 0; t < tiles; ++t) {
      if (t + 1 < tiles) load_tile(t + 1, static_cast<int>((t + 1) % kStages));
      tc::CpAsyncCommit();
      tc::CpAsyncWait<1>();
      __syncthreads();
      compute_tile(static_cast<int>(t % kStages));
      __syncthreads();  // the stage is refilled two tiles later
    }
    tc::CpAsyncWait<0>();

    if (warp < taps) {
      const int64_t block = ((g * args.nnz + k) * taps + warp) * (kBs * kBs);
      if (args.segments > 1) {
        const int64_t segment_stride = args.groups * args.nnz * taps * (kBs * kBs);
        tc::StoreWarpTile32(args.partials + segment * segment_stride + block, acc, lane);
      } else {
        tc::StoreWarpTile32(static_cast<Out*>(args.out) + block, acc, lane);
      }
    }
    __syncthreads();  // the next group restages the same memory
  }
}

// out[e] = sum over s of partials[s][e], s ascending, four elements per thread.
template <typename Out>
__global__ void AddSegments(const float* __restrict__ partials, Out* __restrict__ out,
                            int64_t quads, int32_t segments) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < quads;
       q += stride) {
    float4 sum = reinterpret_cast<const float4*>(partials)[q];
    for (int32_t s = 1; s < segments; ++s) {
      const float4 part = reinterpret_cast<const float4*>(partials)[s * quads + q];
      sum.x += part.x;
      sum.y += part.y;
      sum.z += part.z;
      sum.w += part.w;
    }
    if constexpr (std::is_same_v<Out, float>) {
      reinterpret_cast<float4*>(out)[q] = sum;
    } else {
      uint2 packed;
      packed.x = tc::PackPair<Out>(sum.x, sum.y);
      packed.y = tc::PackPair<Out>(sum.z, sum.w);
      reinterpret_cast<uint2*>(out)[q] = packed;
    }
  }
}

template <typename Elem, typename Out>
cudaError_t LaunchDw(const ConvDwArgs& args, const HaloGeometry& geo, cudaStream_t stream) {
  auto kernel = ConvDwHaloKernel<Elem, Out>;
  static std::atomic<uint64_t> done_devices{0};
  if (OptInSharedMemory(reinterpret_cast<const void*>(kernel), kDwSmemBytes, done_devices) !=
      cudaSuccess) {
    return cudaErrorNotSupported;
  }
  const dim3 grid(static_cast<unsigned>(args.nnz),
                  static_cast<unsigned>(std::min<int64_t>(args.groups, kMaxGridY)),
                  static_cast<unsigned>(args.segments));
  kernel<<<grid, kDwThreads, kDwSmemBytes, stream>>>(args, geo);
  if (args.segments > 1) {
    // Every block is 32 x 32, so the element count is a multiple of 4.
    const int64_t quads = args.groups * args.nnz * geo.taps * (kBs * kBs) / 4;
    constexpr int kAddThreads = 256;
    const int64_t add_blocks = std::min<int64_t>((quads + kAddThreads - 1) / kAddThreads,
                                                 int64_t{8} * MultiprocessorCount());
    AddSegments<Out><<<static_cast<unsigned>(add_blocks), kAddThreads, 0, stream>>>(
        args.partials, static_cast<Out*>(args.out), quads, args.segments);
  }
  return cudaSuccess;
}

// The halo tiling of a stride-1 convolution (forward: base = -pad, step = +dilation; input
// gradient: base = +pad, step = -dilation); false where the halo kernels do not apply.
bool MakeHaloGeometry(const ConvGather& conv, HaloGeometry& geo) {
  const int wo = conv.out_spatial[2];
  if (conv.taps > kMaxTaps || wo < 1 || wo > kTM || conv.out_spatial[0] < 1 ||
      conv.out_spatial[1] < 1) {
    return false;
  }
  for (int d = 0; d < 3; ++d) {
    if (conv.stride[d] != 1) return false;
    geo.a_spatial[d] = conv.a_spatial[d];
    geo.out_spatial[d] = conv.out_spatial[d];
    geo.kernel[d] = conv.kernel[d];
    geo.base[d] = conv.transposed ? conv.pad_lo[d] : -conv.pad_lo[d];
    geo.step[d] = conv.transposed ? -conv.dilation[d] : conv.dilation[d];
    geo.origin[d] = geo.base[d] + std::min(0, (conv.kernel[d] - 1) * geo.step[d]);
  }
  geo.tile_rows = std::min(kTM / wo, conv.out_spatial[1]);
  geo.tiles_per_slice = (conv.out_spatial[1] + geo.tile_rows - 1) / geo.tile_rows;
  geo.halo[0] = (conv.kernel[0] - 1) * conv.dilation[0] + 1;
  geo.halo[1] = geo.tile_rows + (conv.kernel[1] - 1) * conv.dilation[1];
  geo.halo[2] = wo + (conv.kernel[2] - 1) * conv.dilation[2];
  const int64_t halo_positions = static_cast<int64_t>(geo.halo[0]) * geo.halo[1] * geo.halo[2];
  if (halo_positions > kMaxHalo) return false;
  geo.halo_positions = static_cast<int32_t>(halo_positions);
  geo.taps = conv.taps;
  return true;
}

}  // namespace

cudaError_t LaunchConvHaloTensorCore(ElementType input, ElementType output, const BsmmArgs& args,
                                     const ConvGather& conv, cudaStream_t stream) {
  const bool half = input == ElementType::kF16 || input == ElementType::kBF16;
  const bool out_ok = output == input || output == ElementType::kF32;
  HaloGeometry geo{};
  if (!half || !out_ok || args.block_size != kBs || args.out_blocks > 2147483647 ||
      !Aligned16(args.a) || !Aligned16(args.w) || !Aligned16(args.out) ||
      reinterpret_cast<uintptr_t>(args.entries) % 8 != 0 || !MakeHaloGeometry(conv, geo)) {
    return cudaErrorNotSupported;
  }
  const bool out_f32 = output == ElementType::kF32;
  return input == ElementType::kF16
             ? Launch<__half>(args, geo, conv.transposed, out_f32, stream)
             : Launch<__nv_bfloat16>(args, geo, conv.transposed, out_f32, stream);
}

cudaError_t LaunchConvDwHaloTensorCore(ElementType input, ElementType output,
                                       const ConvDwArgs& args, const ConvGather& conv,
                                       cudaStream_t stream) {
  const bool half = input == ElementType::kF16 || input == ElementType::kBF16;
  const bool out_ok = output == input || output == ElementType::kF32;
  HaloGeometry geo{};
  if (!half || !out_ok || args.block_size != kBs || conv.transposed || args.nnz > 2147483647 ||
      args.segments < 1 || args.segments > kMaxConvDwSegments ||
      (args.segments > 1 && !Aligned16(args.partials)) || !Aligned16(args.x) ||
      !Aligned16(args.dy) || !Aligned16(args.out) || !MakeHaloGeometry(conv, geo)) {
    return cudaErrorNotSupported;
  }
  const bool out_f32 = output == ElementType::kF32;
  if (input == ElementType::kF16) {
    return out_f32 ? LaunchDw<__half, float>(args, geo, stream)
                   : LaunchDw<__half, __half>(args, geo, stream);
  }
  return out_f32 ? LaunchDw<__nv_bfloat16, float>(args, geo, stream)
                 : LaunchDw<__nv_bfloat16, __nv_bfloat16>(args, geo, stream);
}

}  // namespace jbs
