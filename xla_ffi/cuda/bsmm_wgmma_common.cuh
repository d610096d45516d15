// What the TMA-fed wgmma kernels of jbs_bsmm share (sm_90a, 16-bit, bs 32 and 16): the tensor maps
// their producer warps load boxes through, their launch, and the epilogue from the wgmma
// accumulator layout.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_COMMON_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_COMMON_CUH_

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>

#include "blocksparse_kernels.h"
#include "bsmm_tc_common.cuh"
#include "hopper_tma.cuh"
#include "launch_util.h"
#include "tensor_core.cuh"
#include "wgmma.cuh"

namespace jbs {
namespace bsmm_tc {

// Output block-column `column`'s span of the layout table (offsets, entries), clamped into
// [0, nnz] so that a corrupt table reads as fewer entries, never out of bounds.
struct ColumnEntries {
  const int2* pairs;  // (a_blk, k) pairs
  int64_t count;
  int64_t a_blocks;
  int64_t nnz;
  // A corrupt pair contributes nothing: the kernels load dummy boxes and skip its wgmma.
  __device__ __forceinline__ bool Valid(int2 pair) const {
    return pair.x >= 0 && pair.x < a_blocks && pair.y >= 0 && pair.y < nnz;
  }
};

template <int kBs = 32>
__device__ __forceinline__ ColumnEntries LoadColumnEntries(const BsmmArgs& args, int64_t column) {
  const int64_t nnz = args.nnz;
  const int64_t begin =
      min(max(static_cast<int64_t>(__ldg(args.offsets + column)), int64_t{0}), nnz);
  const int64_t end =
      min(max(static_cast<int64_t>(__ldg(args.offsets + column + 1)), begin), nnz);
  return {reinterpret_cast<const int2*>(args.entries) + begin, end - begin, args.a_cols / kBs,
          nnz};
}

// The barriers of a TMA ring of `stages` stages, by one thread: "full" completes on the
// producer's expect_tx arrival and the bytes of its boxes, "empty" on one arrival of each of
// `consumers` threads. A CTA barrier must follow before any thread uses them.
__device__ __forceinline__ void InitTmaRing(uint32_t full_barriers, uint32_t empty_barriers,
                                            int stages, uint32_t consumers) {
  for (int s = 0; s < stages; ++s) {
    tma::MbarrierInit(full_barriers + 8 * s, 1);
    tma::MbarrierInit(empty_barriers + 8 * s, consumers);
  }
  tma::FenceMbarrierInit();
}

// Stores a warp's 16 x bs share of a wgmma accumulator's bs = 2 kFloats columns (layout in
// wgmma.cuh: float j in n8 tile j / 4) at block-column `column` of a row-major output with
// out_cols columns: the warp's local row i (0..15) goes to output row out_row(i), or nowhere
// where that is negative.
template <typename Elem, int kFloats, typename OutRow>
__device__ __forceinline__ void StoreWgmmaWarpRows(void* out, int64_t out_cols,
                                                   const float (&acc)[kFloats], OutRow&& out_row,
                                                   int64_t column, int lane, bool out_f32) {
  constexpr int kBs = 2 * kFloats;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t row = out_row((lane >> 2) + 8 * h);
    if (row < 0) continue;
#pragma unroll
    for (int nt = 0; nt < kBs / 8; ++nt) {
      const int64_t offset = row * out_cols + column * kBs + nt * 8 + 2 * (lane & 3);
      const float lo = acc[nt * 4 + 2 * h];
      const float hi = acc[nt * 4 + 2 * h + 1];
      if (out_f32) {
        *reinterpret_cast<float2*>(static_cast<float*>(out) + offset) = make_float2(lo, hi);
      } else {
        *reinterpret_cast<uint32_t*>(static_cast<Elem*>(out) + offset) =
            tc::PackPair<Elem>(lo, hi);
      }
    }
  }
}

// The matmul case: rows [row_base, row_base + 16) of group g's output, rows past the end left
// out.
template <typename Elem, int kFloats>
__device__ __forceinline__ void StoreWgmmaWarpTile(const BsmmArgs& args,
                                                   const float (&acc)[kFloats], int64_t g,
                                                   int64_t row_base, int64_t column, int lane,
                                                   bool out_f32) {
  StoreWgmmaWarpRows<Elem>(
      args.out, args.out_blocks * 2 * kFloats, acc,
      [&](int i) { return row_base + i < args.rows ? g * args.rows + row_base + i : int64_t{-1}; },
      column, lane, out_f32);
}

// The wgmma descriptors of the operands as the TMA-fed tiles keep them at bs 16 and 32: an x box
// of 16-bit rows of one block-row (bs elements: one swizzle row of 32 or 64 bytes, swizzled by
// that width), and a w block stored [n][k] (matmul_t, kTransW: K-major, like x) or [k][n]
// (matmul: MN-major). K-major operands step 32 bytes into the row per k16; an MN-major block
// two atoms (16 rows of k). At bs 16 a block is one k16 step. Layouts in wgmma.cuh.
template <int kBs, bool kTransW>
struct WgmmaBlockOperands {
  static_assert(kBs == 16 || kBs == 32, "one block row is one swizzle row");
  static constexpr uint32_t kRowBytes = kBs * 2;
  static constexpr uint32_t kAtomBytes = 8 * kRowBytes;
  static constexpr uint32_t kBlockBytes = kBs * kRowBytes;
  static constexpr int kTransB = kTransW ? 0 : 1;  // wgmma's flag: 1 = MN-major

  __device__ __forceinline__ static uint64_t Swizzled(uint32_t address, uint32_t leading,
                                                      uint32_t stride) {
    return kBs == 32 ? wg::DescriptorSwizzled64(address, leading, stride)
                     : wg::DescriptorSwizzled32(address, leading, stride);
  }
  // An m64 slab of x rows (K-major) starting at `slab`, at k16 step `k16`.
  __device__ __forceinline__ static uint64_t XSlab(uint32_t slab, int k16) {
    return Swizzled(slab + k16 * 32, 16, kAtomBytes);
  }
  // The w block at `block`, at k16 step `k16`.
  __device__ __forceinline__ static uint64_t WBlock(uint32_t block, int k16) {
    return Swizzled(block + k16 * (kTransW ? 32 : 2 * kAtomBytes), kTransW ? 16 : kBlockBytes,
                    kAtomBytes);
  }
};

// w as (groups, blocks * bs, bs): a box is one bs x bs block, landing with the swizzle of its
// row width (64 bytes at bs 32, 32 at bs 16).
template <MmaKind kKind, uint64_t kBs = 32>
bool EncodeWeightBlockMap(CUtensorMap* map, const void* w, int64_t blocks, int64_t groups) {
  if (blocks * kBs > INT32_MAX || groups > INT32_MAX) return false;
  const uint64_t dims[3] = {kBs, static_cast<uint64_t>(blocks) * kBs,
                            static_cast<uint64_t>(groups)};
  const uint64_t strides[2] = {kBs * 2, static_cast<uint64_t>(blocks) * kBs * kBs * 2};
  const uint32_t box[3] = {kBs, kBs, 1};
  return tma::EncodeSwizzled(map, kKind == MmaKind::kBf16, 3, w, dims, strides, box);
}

// Launches a TMA-fed wgmma kernel taking (args, x_map, w_map, row_tiles, out_f32): one CTA per
// (column tile, row tile of tile_rows, operand group), the last two clamped to the grid's
// limits (the kernels stride over the rest). The maps are encoded here, per call: pure host
// work, no allocation and no synchronization, so the call stays capturable in a command buffer.
//   x_map: x as (groups, a_rows, a_cols), innermost first; a box is one block-row's bs columns
//     of a tile_rows-row tile (rows past a_rows read as zeros).
//   w_map: w as (groups, nnz * bs, bs); a box is one bs x bs block.
//   With kATransposed, x_map is x^T as (groups, a_cols, a_rows): a box is bs rows of k, each
//     64 rows of x (128 bytes), one per m64 slab (rows past a_rows read as zeros); a_rows must
//     be a multiple of 8 (a tensor map's 16-byte strides).
// Both land with the swizzle of their row width (EncodeSwizzled). cudaErrorNotSupported where
// the shapes exceed a tensor map's or the grid's limits, so that the caller falls back to the
// mma.sync kernels.
template <MmaKind kKind, uint32_t kBs = 32, bool kATransposed = false, typename Kernel>
cudaError_t LaunchWgmmaTma(Kernel kernel, std::atomic<uint64_t>& done_devices, int threads,
                           int smem_bytes, int64_t column_tiles, uint32_t tile_rows,
                           const BsmmArgs& args, bool out_f32, cudaStream_t stream) {
  constexpr bool kBf16 = kKind == MmaKind::kBf16;
  if (column_tiles > kMaxGridX || args.nnz * kBs > INT32_MAX || args.a_cols > INT32_MAX ||
      args.a_rows > INT32_MAX || args.groups > INT32_MAX) {
    return cudaErrorNotSupported;
  }
  CUtensorMap x_map;
  CUtensorMap w_map;
  {
    const uint64_t cols = static_cast<uint64_t>(args.a_cols);
    const uint64_t rows = static_cast<uint64_t>(args.a_rows);
    const uint64_t dims[3] = {kATransposed ? rows : cols, kATransposed ? cols : rows,
                              static_cast<uint64_t>(args.groups)};
    const uint64_t strides[2] = {(kATransposed ? rows : cols) * 2, rows * cols * 2};
    const uint32_t box[3] = {kATransposed ? 64u : kBs, kATransposed ? kBs : tile_rows, 1};
    if ((kATransposed && rows % 8 != 0) ||
        !tma::EncodeSwizzled(&x_map, kBf16, 3, args.a, dims, strides, box)) {
      return cudaErrorNotSupported;
    }
  }
  if (!EncodeWeightBlockMap<kKind, kBs>(&w_map, args.w, args.nnz, args.groups)) {
    return cudaErrorNotSupported;
  }
  if (OptInSharedMemory(reinterpret_cast<const void*>(kernel), smem_bytes, done_devices) !=
      cudaSuccess) {
    return cudaErrorNotSupported;
  }
  const int64_t row_tiles = (args.rows + tile_rows - 1) / tile_rows;
  const dim3 grid(static_cast<unsigned>(column_tiles),
                  static_cast<unsigned>(std::min(row_tiles, kMaxGridYZ)),
                  static_cast<unsigned>(std::min(args.groups, kMaxGridYZ)));
  kernel<<<grid, threads, smem_bytes, stream>>>(args, x_map, w_map, row_tiles, out_f32);
  return cudaSuccess;
}

}  // namespace bsmm_tc
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_WGMMA_COMMON_CUH_
