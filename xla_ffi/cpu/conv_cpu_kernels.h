// CPU kernels for the block-sparse convolution (docs/ffi_contract.md, jbs_conv and jbs_conv_dw):
// block-sparse over features, dense over three spatial dimensions. Implicit GEMM: input rows are
// gathered per filter tap on the fly, never materialised as patches. Plain C++, no XLA types.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CPU_CONV_CPU_KERNELS_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CPU_CONV_CPU_KERNELS_H_

#include <cstdint>

#include "xla_ffi/cpu/blocksparse_cpu_kernels.h"

namespace jbs::cpu {

// The forward convolution's geometry, per spatial dimension (D, H, W).
struct ConvGeometry {
  int64_t kernel[3];
  int64_t strides[3];
  int64_t dilation[3];
  int64_t pad_lo[3];
};

struct ConvShape {
  int64_t groups;          // G
  int64_t batch;           // Nb
  int64_t a_spatial[3];    // spatial dims of a
  int64_t a_channels;      // Ca
  int64_t out_spatial[3];  // spatial dims of out
  int64_t n_out_blocks;    // offsets has n_out_blocks + 1 entries
  int64_t nnz;             // weight blocks per group
  int64_t block_size;      // bs
  bool transpose_w;        // false: forward (a = x); true: input gradient (a = dy)
  ConvGeometry geometry;
};

// transpose_w == false: out[g, n, p, o-block] = sum_{e in column o} sum_t
//     a[g, n, p*s + t*d - pad_lo, a_blk(e)-block] @ w[g, k(e), t]
// transpose_w == true (out spatial = the convolution's input spatial): out[g, n, q, o-block] =
//     sum_{e in row o} sum_t a[g, n, (q + pad_lo - t*d) / s, a_blk(e)-block] @ w[g, k(e), t].T
//     over the taps where the division is exact and the quotient in range.
// Out-of-range sources contribute nothing. Reduction order: entries ascending, then taps
// ascending, then the block's reduction index. Tables must already be validated.
template <typename In, typename Out>
void BlockSparseConv(const In* a, const In* w, const int32_t* offsets, const int32_t* entries,
                     Out* out, const ConvShape& shape);

struct ConvDwShape {
  int64_t groups;          // G
  int64_t batch;           // Nb
  int64_t x_spatial[3];    // spatial dims of x (a)
  int64_t x_channels;      // C
  int64_t dy_spatial[3];   // spatial dims of dy (b), the convolution's output
  int64_t dy_channels;     // N
  int64_t nnz;
  int64_t block_size;
  ConvGeometry geometry;
};

// out[g, k, t] = sum_{n, p} x[g, n, p*s + t*d - pad_lo, i_k-block].T @ dy[g, n, p, j_k-block],
// coords[k] = (i_k, j_k); rows (n, p) reduced in increasing row-major order.
template <typename In, typename Out>
void BlockSparseConvDw(const In* x, const In* dy, const int32_t* coords, Out* out,
                       const ConvDwShape& shape);

}  // namespace jbs::cpu

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CPU_CONV_CPU_KERNELS_H_
