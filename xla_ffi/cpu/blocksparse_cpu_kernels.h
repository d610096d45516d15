// CPU reference-quality kernels for the two block-sparse operations described in
// docs/ffi_contract.md. They are plain C++ (no XLA types) so the FFI layer stays a thin
// validation/dispatch shim and the kernels can be exercised on their own.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CPU_BLOCKSPARSE_CPU_KERNELS_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CPU_BLOCKSPARSE_CPU_KERNELS_H_

#include <cstdint>
#include <type_traits>

namespace jbs::cpu {

// 16-bit storage formats are carried as raw bits; distinct wrapper types keep bf16 and f16 from
// being confused by overload resolution. Layout-compatible with the XLA buffers they alias.
struct Bf16Bits {
  uint16_t bits;
};
struct F16Bits {
  uint16_t bits;
};
static_assert(sizeof(Bf16Bits) == 2 && sizeof(F16Bits) == 2, "must alias 16-bit buffers");

// Contract: float64 inputs accumulate in double, everything else in float.
template <typename In>
using AccumulatorFor = std::conditional_t<std::is_same_v<In, double>, double, float>;

struct BsmmShape {
  int64_t groups;        // G
  int64_t rows;          // M
  int64_t a_cols;        // Ka
  int64_t n_out_blocks;  // offsets has n_out_blocks + 1 entries
  int64_t nnz;           // blocks per group in w
  int64_t block_size;    // bs
  bool transpose_w;
};

// out[g, :, o*bs:(o+1)*bs] = sum over e in [offsets[o], offsets[o+1]) of
//   a[g, :, a_blk(e)*bs : +bs] @ op(w[g, k(e)]),  entries[e] = (a_blk, k).
// Tables must already be validated (in range, non-decreasing offsets).
template <typename In, typename Out>
void BlockSparseMatmul(const In* a, const In* w, const int32_t* offsets, const int32_t* entries,
                       Out* out, const BsmmShape& shape);

struct SampledShape {
  int64_t groups;      // G
  int64_t rows;        // M, reduced over
  int64_t a_cols;      // C
  int64_t b_cols;      // N
  int64_t nnz;         // number of sampled blocks
  int64_t block_size;  // bs
};

// out[g, k] = a[g, :, i_k*bs:+bs].T @ b[g, :, j_k*bs:+bs],  coords[k] = (i_k, j_k).
// Coordinates must already be validated.
template <typename In, typename Out>
void SampledDenseDense(const In* a, const In* b, const int32_t* coords, Out* out,
                       const SampledShape& shape);

}  // namespace jbs::cpu

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CPU_BLOCKSPARSE_CPU_KERNELS_H_
