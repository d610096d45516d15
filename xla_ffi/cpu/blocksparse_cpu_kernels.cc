#include "xla_ffi/cpu/blocksparse_cpu_kernels.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "xla_ffi/common/float_conversions.h"

namespace jbs::cpu {
namespace {

// Rows of M handled per pass. A chunk's accumulator (rows x bs) plus the widened a tile stay in
// L1/L2 even at bs = 128, while the per-entry cost of widening the w block is amortised over
// this many rows.
constexpr int64_t kRowChunk = 32;

inline float Widen(float v) { return v; }
inline double Widen(double v) { return v; }
inline float Widen(Bf16Bits v) { return Bf16BitsToFloat(v.bits); }
inline float Widen(F16Bits v) { return F16BitsToFloat(v.bits); }

inline void Narrow(float v, float* dst) { *dst = v; }
inline void Narrow(double v, double* dst) { *dst = v; }
inline void Narrow(float v, Bf16Bits* dst) { dst->bits = FloatToBf16Bits(v); }
inline void Narrow(float v, F16Bits* dst) { dst->bits = FloatToF16Bits(v); }

// Copies a rows x cols window of a strided row-major buffer into a dense accumulator-typed tile,
// so the inner loops run on contiguous, already-widened data.
template <typename In, typename Acc>
void LoadTile(const In* src, int64_t src_stride, int64_t rows, int64_t cols, Acc* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const In* src_row = src + r * src_stride;
    Acc* dst_row = dst + r * cols;
    for (int64_t c = 0; c < cols; ++c) dst_row[c] = Widen(src_row[c]);
  }
}

// Loads op(w) for one bs x bs block as tile[t * bs + c] = op(w)[t, c], transposing if needed so
// the matmul's inner loop always walks tile rows contiguously.
template <typename In, typename Acc>
void LoadWeightTile(const In* block, int64_t bs, bool transpose, Acc* tile) {
  if (!transpose) {
    LoadTile(block, bs, bs, bs, tile);
    return;
  }
  for (int64_t t = 0; t < bs; ++t) {
    for (int64_t c = 0; c < bs; ++c) tile[t * bs + c] = Widen(block[c * bs + t]);
  }
}

template <typename Acc, typename Out>
void StoreTile(const Acc* tile, int64_t rows, int64_t cols, Out* dst, int64_t dst_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) Narrow(tile[r * cols + c], dst + r * dst_stride + c);
  }
}

// acc[r, :] += x_row(r) @ y, where x_row has `depth` entries and y is depth x width.
// Four depth steps are fused per sweep so each accumulator element is loaded/stored once per
// four products; the additions are still applied one product at a time in increasing depth
// order, so the result is identical to the naive loop. bs is a multiple of 8, hence no tail.
template <typename Acc>
inline void AccumulateRow(Acc x0, Acc x1, Acc x2, Acc x3, const Acc* __restrict y0,
                          const Acc* __restrict y1, const Acc* __restrict y2,
                          const Acc* __restrict y3, int64_t width, Acc* __restrict acc) {
  for (int64_t c = 0; c < width; ++c) {
    Acc sum = acc[c];
    sum += x0 * y0[c];
    sum += x1 * y1[c];
    sum += x2 * y2[c];
    sum += x3 * y3[c];
    acc[c] = sum;
  }
}

template <typename Acc>
inline void AccumulateRow(Acc x0, const Acc* __restrict y0, int64_t width, Acc* __restrict acc) {
  for (int64_t c = 0; c < width; ++c) acc[c] += x0 * y0[c];
}

}  // namespace

template <typename In, typename Out>
void BlockSparseMatmul(const In* a, const In* w, const int32_t* offsets, const int32_t* entries,
                       Out* out, const BsmmShape& shape) {
  using Acc = AccumulatorFor<In>;
  const int64_t bs = shape.block_size;
  const int64_t rows_total = shape.rows;
  const int64_t out_cols = shape.n_out_blocks * bs;
  if (shape.groups == 0 || rows_total == 0 || out_cols == 0) return;

  std::vector<Acc> acc(kRowChunk * bs);
  std::vector<Acc> a_tile(kRowChunk * bs);
  std::vector<Acc> w_tile(bs * bs);

  for (int64_t g = 0; g < shape.groups; ++g) {
    const In* a_group = a + g * rows_total * shape.a_cols;
    const In* w_group = w + g * shape.nnz * bs * bs;
    Out* out_group = out + g * rows_total * out_cols;

    for (int64_t row0 = 0; row0 < rows_total; row0 += kRowChunk) {
      const int64_t rows = std::min(kRowChunk, rows_total - row0);
      for (int64_t o = 0; o < shape.n_out_blocks; ++o) {
        // Empty block-columns fall through with a zero accumulator, which writes the zeros the
        // contract requires.
        std::fill(acc.begin(), acc.begin() + rows * bs, Acc(0));
        for (int32_t e = offsets[o]; e < offsets[o + 1]; ++e) {
          const int64_t a_block = entries[2 * e];
          const int64_t w_block = entries[2 * e + 1];
          LoadTile(a_group + row0 * shape.a_cols + a_block * bs, shape.a_cols, rows, bs,
                   a_tile.data());
          LoadWeightTile(w_group + w_block * bs * bs, bs, shape.transpose_w, w_tile.data());
          for (int64_t r = 0; r < rows; ++r) {
            const Acc* x = a_tile.data() + r * bs;
            Acc* acc_row = acc.data() + r * bs;
            for (int64_t t = 0; t < bs; t += 4) {
              const Acc* y = w_tile.data() + t * bs;
              AccumulateRow(x[t], x[t + 1], x[t + 2], x[t + 3], y, y + bs, y + 2 * bs,
                            y + 3 * bs, bs, acc_row);
            }
          }
        }
        StoreTile(acc.data(), rows, bs, out_group + row0 * out_cols + o * bs, out_cols);
      }
    }
  }
}

template <typename In, typename Out>
void SampledDenseDense(const In* a, const In* b, const int32_t* coords, Out* out,
                       const SampledShape& shape) {
  using Acc = AccumulatorFor<In>;
  const int64_t bs = shape.block_size;
  const int64_t rows_total = shape.rows;
  if (shape.groups == 0 || shape.nnz == 0) return;

  std::vector<Acc> acc(bs * bs);
  std::vector<Acc> a_tile(kRowChunk * bs);
  std::vector<Acc> b_tile(kRowChunk * bs);

  for (int64_t g = 0; g < shape.groups; ++g) {
    const In* a_group = a + g * rows_total * shape.a_cols;
    const In* b_group = b + g * rows_total * shape.b_cols;
    for (int64_t k = 0; k < shape.nnz; ++k) {
      const int64_t i = coords[2 * k];
      const int64_t j = coords[2 * k + 1];
      // With M == 0 nothing is accumulated and the block is written as zeros.
      std::fill(acc.begin(), acc.end(), Acc(0));
      for (int64_t row0 = 0; row0 < rows_total; row0 += kRowChunk) {
        const int64_t rows = std::min(kRowChunk, rows_total - row0);
        LoadTile(a_group + row0 * shape.a_cols + i * bs, shape.a_cols, rows, bs, a_tile.data());
        LoadTile(b_group + row0 * shape.b_cols + j * bs, shape.b_cols, rows, bs, b_tile.data());
        // acc[p, :] += sum_m a[m, p] * b[m, :], m in increasing order; four rows per sweep.
        int64_t m = 0;
        for (; m + 4 <= rows; m += 4) {
          const Acc* x = a_tile.data() + m * bs;
          const Acc* y = b_tile.data() + m * bs;
          for (int64_t p = 0; p < bs; ++p) {
            AccumulateRow(x[p], x[bs + p], x[2 * bs + p], x[3 * bs + p], y, y + bs, y + 2 * bs,
                          y + 3 * bs, bs, acc.data() + p * bs);
          }
        }
        for (; m < rows; ++m) {
          const Acc* x = a_tile.data() + m * bs;
          const Acc* y = b_tile.data() + m * bs;
          for (int64_t p = 0; p < bs; ++p) AccumulateRow(x[p], y, bs, acc.data() + p * bs);
        }
      }
      StoreTile(acc.data(), bs, bs, out + (g * shape.nnz + k) * bs * bs, bs);
    }
  }
}

// The (input, output) pairs allowed by the contract.
#define JBS_INSTANTIATE(In, Out)                                                            \
  template void BlockSparseMatmul<In, Out>(const In*, const In*, const int32_t*,           \
                                           const int32_t*, Out*, const BsmmShape&);        \
  template void SampledDenseDense<In, Out>(const In*, const In*, const int32_t*, Out*,     \
                                           const SampledShape&);

JBS_INSTANTIATE(float, float)
JBS_INSTANTIATE(double, double)
JBS_INSTANTIATE(Bf16Bits, Bf16Bits)
JBS_INSTANTIATE(Bf16Bits, float)
JBS_INSTANTIATE(F16Bits, F16Bits)
JBS_INSTANTIATE(F16Bits, float)

#undef JBS_INSTANTIATE

}  // namespace jbs::cpu
