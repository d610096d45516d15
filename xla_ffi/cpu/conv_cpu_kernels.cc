#include "xla_ffi/cpu/conv_cpu_kernels.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "xla_ffi/cpu/cpu_kernel_common.h"

// Implicit GEMM on the micro-kernels of the block-sparse products (cpu_kernel_common.h). The
// convolution is a block-sparse product whose reduction runs over (entry, tap) segments: for
// each chunk of output rows (positions (n, d, h, w) in row-major order) and each segment, the
// source row of every output row is looked up in a per-chunk table, and the rows are gathered
// (widened, zero where the source falls outside the input) into the same contiguous panel the
// product's micro-kernel reads. Nothing of the size of the patches is ever materialised; the
// scratch is a few fixed-size vectors per call.
//
// Determinism: every output element is accumulated one product at a time from +0, in the order
// entries ascending, taps ascending, block reduction index ascending (jbs_conv) or rows (n, p)
// ascending (jbs_conv_dw). Chunking only splits that sequence.

namespace jbs::cpu {
namespace {

using namespace kernel_common;  // NOLINT: the shared CPU kernel helpers

// Output rows per pass (bounds the accumulator, the gathered panel and the source table).
constexpr int64_t kRowChunk = 64;
// Rows per pass of the weight-gradient reduction.
constexpr int64_t kDwRowChunk = 256;
// Packed weight scratch per segment chunk, in elements.
constexpr int64_t kWeightScratch = 16384;
// Reduction depth per segment chunk (bounds the gathered activation panel).
constexpr int64_t kMaxChunkDepth = 1024;

inline int64_t Product3(const int64_t* v) { return v[0] * v[1] * v[2]; }

// Splits a row-major index over `dims` (3 dims) into its coordinates.
inline void Unravel3(int64_t index, const int64_t* dims, int64_t* coords) {
  coords[2] = index % dims[2];
  index /= dims[2];
  coords[1] = index % dims[1];
  coords[0] = index / dims[1];
}

// The row of `a` (spatial dims a_spatial, flat over (n, spatial)) feeding output position `pos`
// of batch member n through tap `tap`, or -1 when there is none.
//   forward:    src = pos * s + tap * d - pad_lo, in range
//   transposed: pos = src * s + tap * d - pad_lo, i.e. src = (pos + pad_lo - tap * d) / s, exact
//               and in range
inline int64_t SourceRow(const ConvGeometry& geo, const int64_t* a_spatial, bool transposed,
                         int64_t n, const int64_t* pos, const int64_t* tap) {
  int64_t row = n;
  for (int i = 0; i < 3; ++i) {
    int64_t src;
    if (!transposed) {
      src = pos[i] * geo.strides[i] + tap[i] * geo.dilation[i] - geo.pad_lo[i];
    } else {
      const int64_t num = pos[i] + geo.pad_lo[i] - tap[i] * geo.dilation[i];
      if (num < 0 || num % geo.strides[i] != 0) return -1;
      src = num / geo.strides[i];
    }
    if (src < 0 || src >= a_spatial[i]) return -1;
    row = row * a_spatial[i] + src;
  }
  return row;
}

// sources[t * kRowChunk + r] for the rows [row0, row0 + rows) of an output with spatial dims
// out_spatial, and every tap t.
inline void FillSources(const ConvGeometry& geo, const int64_t* a_spatial,
                        const int64_t* out_spatial, bool transposed, int64_t row0, int64_t rows,
                        int64_t stride, int64_t* sources) {
  const int64_t per_n = Product3(out_spatial);
  const int64_t taps = Product3(geo.kernel);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = row0 + r;
    int64_t pos[3];
    Unravel3(row % per_n, out_spatial, pos);
    for (int64_t t = 0; t < taps; ++t) {
      int64_t tap[3];
      Unravel3(t, geo.kernel, tap);
      sources[t * stride + r] = SourceRow(geo, a_spatial, transposed, row / per_n, pos, tap);
    }
  }
}

// Widens row `source` of a (row stride lda, starting at column col0) into dst, or zero-fills it.
template <int BS, typename In, typename Acc>
inline void GatherRow(const In* a, int64_t lda, int64_t col0, int64_t source, Acc* dst) {
  if (source < 0) {
    std::fill(dst, dst + BS, Acc(0));
    return;
  }
  const In* __restrict s = a + source * lda + col0;
  for (int c = 0; c < BS; ++c) dst[c] = Widen(s[c]);
}

template <typename In, typename Out, int BS>
void ConvImpl(const In* a, const In* w, const int32_t* offsets, const int32_t* entries, Out* out,
              const ConvShape& shape) {
  using Acc = AccumulatorFor<In>;
  constexpr int MR = Tile<Acc>::kRows;
  constexpr int NV = std::min<int>(Tile<Acc>::kVecs, BS / kLanes<Acc>);
  constexpr int NR = NV * kLanes<Acc>;
  static_assert(BS % NR == 0, "block size must be a multiple of the tile width");

  const ConvGeometry& geo = shape.geometry;
  const int64_t taps = Product3(geo.kernel);
  const int64_t a_rows = shape.batch * Product3(shape.a_spatial);
  const int64_t rows_total = shape.batch * Product3(shape.out_spatial);
  const int64_t lda = shape.a_channels;
  const int64_t out_cols = shape.n_out_blocks * BS;
  if (shape.groups == 0 || rows_total == 0 || out_cols == 0) return;

  constexpr int64_t kChunkSegments =
      std::max<int64_t>(1, std::min(kWeightScratch / (BS * BS), kMaxChunkDepth / BS));
  std::vector<Acc> acc(kRowChunk * BS);
  std::vector<Acc> w_pack(kChunkSegments * BS * BS);
  std::vector<Acc> a_pack(kRowChunk * kChunkSegments * BS);
  std::vector<int64_t> sources(taps * kRowChunk);
  const Acc* a_ptr[kChunkSegments];
  const Acc* w_ptr[kChunkSegments];

  for (int64_t row0 = 0; row0 < rows_total; row0 += kRowChunk) {
    const int64_t rows = std::min(kRowChunk, rows_total - row0);
    FillSources(geo, shape.a_spatial, shape.out_spatial, shape.transpose_w, row0, rows, kRowChunk,
                sources.data());
    for (int64_t g = 0; g < shape.groups; ++g) {
      const In* a_group = a + g * a_rows * lda;
      const In* w_group = w + g * shape.nnz * taps * BS * BS;
      Out* out_group = out + g * rows_total * out_cols;
      for (int64_t o = 0; o < shape.n_out_blocks; ++o) {
        const int64_t e_begin = offsets[o], e_end = offsets[o + 1];
        const int64_t n_segments = (e_end - e_begin) * taps;
        // Empty block-columns store the zero accumulator, as the contract requires.
        if (n_segments == 0) std::fill(acc.begin(), acc.begin() + rows * BS, Acc(0));
        for (int64_t s0 = 0; s0 < n_segments; s0 += kChunkSegments) {
          const int64_t n_seg = std::min(kChunkSegments, n_segments - s0);
          const bool init = s0 == 0;
          const int64_t a_ld = n_seg * BS;
          for (int64_t s = 0; s < n_seg; ++s) {
            const int64_t e = e_begin + (s0 + s) / taps;
            const int64_t t = (s0 + s) % taps;
            const int64_t a_block = entries[2 * e];
            const In* w_block = w_group + (entries[2 * e + 1] * taps + t) * BS * BS;
            Acc* w_dst = w_pack.data() + s * BS * BS;
            PackWeightBlock<BS>(w_block, shape.transpose_w, w_dst);
            w_ptr[s] = w_dst;
            // Segment s occupies columns [s*BS, (s+1)*BS) of a rows x (n_seg*BS) panel.
            Acc* a_dst = a_pack.data() + s * BS;
            const int64_t* tap_sources = sources.data() + t * kRowChunk;
            for (int64_t r = 0; r < rows; ++r) {
              GatherRow<BS>(a_group, lda, a_block * BS, tap_sources[r], a_dst + r * a_ld);
            }
            a_ptr[s] = a_dst;
          }
          PanelProduct<Acc, BS, MR, NV>(n_seg, a_ptr, a_ld, w_ptr, init, rows, acc.data());
        }
        StoreRows<BS>(acc.data(), rows, out_group + row0 * out_cols + o * BS, out_cols);
      }
    }
  }
}

template <typename In, typename Out, int BS>
void ConvDwImpl(const In* x, const In* dy, const int32_t* coords, Out* out,
                const ConvDwShape& shape) {
  using Acc = AccumulatorFor<In>;
  constexpr int MR = Tile<Acc>::kRows;
  constexpr int NV = std::min<int>(Tile<Acc>::kVecs, BS / kLanes<Acc>);
  constexpr int NR = NV * kLanes<Acc>;
  static_assert(BS % NR == 0 && BS % MR == 0, "block size must be a multiple of the tile");

  const ConvGeometry& geo = shape.geometry;
  const int64_t taps = Product3(geo.kernel);
  const int64_t x_rows = shape.batch * Product3(shape.x_spatial);
  const int64_t rows_total = shape.batch * Product3(shape.dy_spatial);
  const int64_t out_size = shape.nnz * taps * BS * BS;  // per group
  if (shape.groups == 0 || out_size == 0) return;

  // Row chunks run outermost (per group), so each chunk's source table and dy panel are built
  // once and reused by every tap; every (k, t) block keeps its own accumulator across chunks.
  // float and double outputs accumulate in place; 16-bit outputs through a float scratch.
  constexpr bool kInPlace = std::is_same_v<Out, Acc>;
  std::vector<Acc> scratch(kInPlace ? 0 : out_size);
  std::vector<Acc> a_pack(kDwRowChunk * BS);
  std::vector<Acc> b_pack(kDwRowChunk * BS);
  std::vector<int64_t> sources(taps * kDwRowChunk);

  for (int64_t g = 0; g < shape.groups; ++g) {
    const In* x_group = x + g * x_rows * shape.x_channels;
    const In* dy_group = dy + g * rows_total * shape.dy_channels;
    Out* out_group = out + g * out_size;
    Acc* acc = kInPlace ? reinterpret_cast<Acc*>(out_group) : scratch.data();
    // With no rows nothing is accumulated and the blocks are written as zeros.
    if (rows_total == 0) std::fill(acc, acc + out_size, Acc(0));
    for (int64_t row0 = 0; row0 < rows_total; row0 += kDwRowChunk) {
      const int64_t rows = std::min(kDwRowChunk, rows_total - row0);
      const bool init = row0 == 0;
      FillSources(geo, shape.x_spatial, shape.dy_spatial, false, row0, rows, kDwRowChunk,
                  sources.data());
      for (int64_t k = 0; k < shape.nnz; ++k) {
        const int64_t i = coords[2 * k];
        const int64_t j = coords[2 * k + 1];
        WidenRows<BS>(dy_group + row0 * shape.dy_channels + j * BS, shape.dy_channels, rows,
                      b_pack.data(), BS);
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t* tap_sources = sources.data() + t * kDwRowChunk;
          for (int64_t r = 0; r < rows; ++r) {
            GatherRow<BS>(x_group, shape.x_channels, i * BS, tap_sources[r],
                          a_pack.data() + r * BS);
          }
          Acc* block = acc + (k * taps + t) * BS * BS;
          for (int p = 0; p < BS; p += MR) {
            for (int q = 0; q < BS; q += NR) {
              SampledMicroKernel<Acc, BS, MR, NV>(rows, a_pack.data() + p, BS,
                                                  b_pack.data() + q, BS, init,
                                                  block + p * BS + q);
            }
          }
        }
      }
    }
    if constexpr (!kInPlace) StoreRows<BS>(acc, out_size / BS, out_group, BS);
  }
}

}  // namespace

template <typename In, typename Out>
void BlockSparseConv(const In* a, const In* w, const int32_t* offsets, const int32_t* entries,
                     Out* out, const ConvShape& shape) {
  kernel_common::WithBlockSize(shape.block_size, [&](auto bs) {
    ConvImpl<In, Out, decltype(bs)::value>(a, w, offsets, entries, out, shape);
  });
}

template <typename In, typename Out>
void BlockSparseConvDw(const In* x, const In* dy, const int32_t* coords, Out* out,
                       const ConvDwShape& shape) {
  kernel_common::WithBlockSize(shape.block_size, [&](auto bs) {
    ConvDwImpl<In, Out, decltype(bs)::value>(x, dy, coords, out, shape);
  });
}

#define JBS_INSTANTIATE(In, Out)                                                          \
  template void BlockSparseConv<In, Out>(const In*, const In*, const int32_t*,           \
                                         const int32_t*, Out*, const ConvShape&);        \
  template void BlockSparseConvDw<In, Out>(const In*, const In*, const int32_t*, Out*,   \
                                           const ConvDwShape&);

JBS_FOR_EACH_TYPE_PAIR(JBS_INSTANTIATE)

#undef JBS_INSTANTIATE

}  // namespace jbs::cpu
