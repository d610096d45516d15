#include "xla_ffi/cpu/blocksparse_cpu_kernels.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "xla_ffi/cpu/cpu_kernel_common.h"

// Performance notes.
// * Portable: plain C++ loops with compile-time trip counts (block size is a template
//   parameter), written so that an SSE2-only build auto-vectorises them; no intrinsics, no
//   -march flags, no threads.
// * Register tiling: each micro-kernel keeps an MR x NR accumulator tile in a local array (which
//   the compiler keeps in vector registers) for a whole reduction, instead of streaming the
//   accumulator row through memory once per product.
// * Bitwise determinism and order: every output element is accumulated one product at a time, in
//   the order fixed by the tables (bsmm: entries e ascending, then t = 0..bs-1 ascending; sampled:
//   rows m = 0..M-1 ascending), starting from +0. Chunking only splits that sequence; a chunk
//   resumes from the exact partial sum the previous one stored. So results do not depend on tile
//   sizes, chunking or the vector width the compiler picks.
// * Inputs are widened (16-bit -> float) or copied once per tile into contiguous scratch panels,
//   never converted per multiply; transposed weight blocks are transposed once into scratch so the
//   inner loop always walks contiguous output columns. Only untransposed float/double weight
//   blocks (already contiguous) are read in place.

namespace jbs::cpu {
namespace {

using namespace kernel_common;  // NOLINT: the shared helpers are this file's own

// Rows of M per pass of the block-sparse product: bounds the accumulator and widened-input
// scratch while amortising each (re)packed weight block over this many rows.
constexpr int64_t kRowChunk = 64;
// Rows of M per pass of the sampled product (bounds the widened 16-bit scratch).
constexpr int64_t kSampledRowChunk = 256;
// Packed (widened or transposed) weight scratch per entry chunk, in elements.
constexpr int64_t kWeightScratch = 16384;
// Reduction depth per entry chunk (bounds the widened activation scratch).
constexpr int64_t kMaxChunkDepth = 1024;

template <typename In, typename Out, int BS>
void BsmmImpl(const In* a, const In* w, const int32_t* offsets, const int32_t* entries, Out* out,
              const BsmmShape& shape) {
  using Acc = AccumulatorFor<In>;
  constexpr int MR = Tile<Acc>::kRows;
  constexpr int NV = std::min<int>(Tile<Acc>::kVecs, BS / kLanes<Acc>);
  constexpr int NR = NV * kLanes<Acc>;
  static_assert(BS % NR == 0, "block size must be a multiple of the tile width");
  // Activations are always copied (widened if 16-bit) into a contiguous panel: reading them in
  // place with a large power-of-two row stride thrashes L1 sets.
  constexpr bool kWidenA = true;
  const bool pack_w = kWidenA || shape.transpose_w;

  const int64_t rows_total = shape.rows;
  const int64_t lda = shape.a_cols;
  const int64_t out_cols = shape.n_out_blocks * BS;
  if (shape.groups == 0 || rows_total == 0 || out_cols == 0) return;

  constexpr int64_t kChunkEntries =
      std::max<int64_t>(1, std::min(kWeightScratch / (BS * BS), kMaxChunkDepth / BS));
  std::vector<Acc> acc(kRowChunk * BS);
  std::vector<Acc> w_pack(pack_w ? kChunkEntries * BS * BS : 0);
  std::vector<Acc> a_pack(kWidenA ? kRowChunk * kChunkEntries * BS : 0);
  const Acc* a_ptr[kChunkEntries];
  const Acc* w_ptr[kChunkEntries];

  for (int64_t g = 0; g < shape.groups; ++g) {
    const In* a_group = a + g * rows_total * lda;
    const In* w_group = w + g * shape.nnz * BS * BS;
    Out* out_group = out + g * rows_total * out_cols;

    for (int64_t o = 0; o < shape.n_out_blocks; ++o) {
      const int64_t e_begin = offsets[o], e_end = offsets[o + 1];
      for (int64_t row0 = 0; row0 < rows_total; row0 += kRowChunk) {
        const int64_t rows = std::min(kRowChunk, rows_total - row0);
        // Empty block-columns store the zero accumulator, which is what the contract requires.
        if (e_begin == e_end) std::fill(acc.begin(), acc.begin() + rows * BS, Acc(0));
        for (int64_t e0 = e_begin; e0 < e_end; e0 += kChunkEntries) {
          const int64_t n_seg = std::min(kChunkEntries, e_end - e0);
          const bool init = e0 == e_begin;
          for (int64_t s = 0; s < n_seg; ++s) {
            const int64_t a_block = entries[2 * (e0 + s)];
            const In* w_block = w_group + entries[2 * (e0 + s) + 1] * BS * BS;
            if (pack_w) {
              Acc* dst = w_pack.data() + s * BS * BS;
              PackWeightBlock<BS>(w_block, shape.transpose_w, dst);
              w_ptr[s] = dst;
            } else {
              w_ptr[s] = reinterpret_cast<const Acc*>(w_block);
            }
            const In* a_src = a_group + row0 * lda + a_block * BS;
            if constexpr (kWidenA) {
              // Segment s occupies columns [s*BS, (s+1)*BS) of a rows x (n_seg*BS) panel.
              Acc* dst = a_pack.data() + s * BS;
              WidenRows<BS>(a_src, lda, rows, dst, n_seg * BS);
              a_ptr[s] = dst;
            } else {
              a_ptr[s] = reinterpret_cast<const Acc*>(a_src);
            }
          }
          const int64_t a_ld = kWidenA ? n_seg * BS : lda;
          PanelProduct<Acc, BS, MR, NV>(n_seg, a_ptr, a_ld, w_ptr, init, rows, acc.data());
        }
        StoreRows<BS>(acc.data(), rows, out_group + row0 * out_cols + o * BS, out_cols);
      }
    }
  }
}

template <typename In, typename Out, int BS>
void SampledImpl(const In* a, const In* b, const int32_t* coords, Out* out,
                 const SampledShape& shape) {
  using Acc = AccumulatorFor<In>;
  constexpr int MR = Tile<Acc>::kRows;
  constexpr int NV = std::min<int>(Tile<Acc>::kVecs, BS / kLanes<Acc>);
  constexpr int NR = NV * kLanes<Acc>;
  static_assert(BS % NR == 0 && BS % MR == 0, "block size must be a multiple of the tile");
  // Both operands are copied (widened if 16-bit) into contiguous panels: reading them in place
  // with a large power-of-two row stride thrashes L1 sets.
  constexpr bool kWiden = true;
  const int64_t rows_total = shape.rows;
  if (shape.groups == 0 || shape.nnz == 0) return;

  std::vector<Acc> acc(BS * BS);
  std::vector<Acc> a_pack(kWiden ? kSampledRowChunk * BS : 0);
  std::vector<Acc> b_pack(kWiden ? kSampledRowChunk * BS : 0);

  for (int64_t g = 0; g < shape.groups; ++g) {
    const In* a_group = a + g * rows_total * shape.a_cols;
    const In* b_group = b + g * rows_total * shape.b_cols;
    for (int64_t k = 0; k < shape.nnz; ++k) {
      const int64_t i = coords[2 * k];
      const int64_t j = coords[2 * k + 1];
      // With M == 0 nothing is accumulated and the block is written as zeros.
      if (rows_total == 0) std::fill(acc.begin(), acc.end(), Acc(0));
      for (int64_t row0 = 0; row0 < rows_total; row0 += kSampledRowChunk) {
        const int64_t rows = std::min(kSampledRowChunk, rows_total - row0);
        const In* a_src = a_group + row0 * shape.a_cols + i * BS;
        const In* b_src = b_group + row0 * shape.b_cols + j * BS;
        const Acc* a_use;
        const Acc* b_use;
        int64_t lda, ldb;
        if constexpr (kWiden) {
          WidenRows<BS>(a_src, shape.a_cols, rows, a_pack.data(), BS);
          WidenRows<BS>(b_src, shape.b_cols, rows, b_pack.data(), BS);
          a_use = a_pack.data();
          b_use = b_pack.data();
          lda = ldb = BS;
        } else {
          a_use = reinterpret_cast<const Acc*>(a_src);
          b_use = reinterpret_cast<const Acc*>(b_src);
          lda = shape.a_cols;
          ldb = shape.b_cols;
        }
        const bool init = row0 == 0;
        for (int p = 0; p < BS; p += MR) {
          for (int q = 0; q < BS; q += NR) {
            SampledMicroKernel<Acc, BS, MR, NV>(rows, a_use + p, lda, b_use + q, ldb, init,
                                                acc.data() + p * BS + q);
          }
        }
      }
      StoreRows<BS>(acc.data(), BS, out + (g * shape.nnz + k) * BS * BS, BS);
    }
  }
}

}  // namespace

template <typename In, typename Out>
void BlockSparseMatmul(const In* a, const In* w, const int32_t* offsets, const int32_t* entries,
                       Out* out, const BsmmShape& shape) {
  kernel_common::WithBlockSize(shape.block_size, [&](auto bs) {
    BsmmImpl<In, Out, decltype(bs)::value>(a, w, offsets, entries, out, shape);
  });
}

template <typename In, typename Out>
void SampledDenseDense(const In* a, const In* b, const int32_t* coords, Out* out,
                       const SampledShape& shape) {
  kernel_common::WithBlockSize(shape.block_size, [&](auto bs) {
    SampledImpl<In, Out, decltype(bs)::value>(a, b, coords, out, shape);
  });
}

#define JBS_INSTANTIATE(In, Out)                                                            \
  template void BlockSparseMatmul<In, Out>(const In*, const In*, const int32_t*,           \
                                           const int32_t*, Out*, const BsmmShape&);        \
  template void SampledDenseDense<In, Out>(const In*, const In*, const int32_t*, Out*,     \
                                           const SampledShape&);

JBS_FOR_EACH_TYPE_PAIR(JBS_INSTANTIATE)

#undef JBS_INSTANTIATE

}  // namespace jbs::cpu
