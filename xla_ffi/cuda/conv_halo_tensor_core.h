// Halo-tile tensor-core path of jbs_conv for stride-1 convolutions (benchmarks/NOTES.md, v4).
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_CONV_HALO_TENSOR_CORE_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_CONV_HALO_TENSOR_CORE_H_

#include <cuda_runtime_api.h>

#include "blocksparse_kernels.h"

namespace jbs {

// Same arguments and return convention as LaunchConvTensorCore. Covers 16-bit inputs, bs 32,
// unit strides, output rows of at most 128 positions, at most 9 taps and a halo of at most 256
// positions; returns cudaErrorNotSupported, having launched nothing, for anything else.
cudaError_t LaunchConvHaloTensorCore(ElementType input, ElementType output, const BsmmArgs& args,
                                     const ConvGather& conv, cudaStream_t stream);

// The most segments jbs_conv_dw_halo splits a filter gradient's output positions into.
constexpr int32_t kMaxConvDwSegments = 64;

// jbs_conv_dw_halo (chosen on the Python side where halo_filter_grad_applies):
// out[g, k, t] = sum_p x[g, src(p, t), i_k block].T @ dy[g, p, j_k block] with the forward
// geometry of `conv` (transposed = false, out_spatial = dy's spatial shape).
struct ConvDwArgs {
  const void* x;          // (groups, x_rows, x_cols), x_rows = batch * D * H * W
  const void* dy;         // (groups, dy_rows, dy_cols), dy_rows = batch * Do * Ho * Wo
  const int32_t* coords;  // (nnz, 2): (i_k, j_k)
  void* out;              // (groups, nnz, taps, bs, bs)
  // segments > 1: the output positions are split into that many contiguous segments, each
  // CTA's float sums go to partials (segments, groups, nnz, taps, bs, bs), and a second kernel
  // adds them in segment order into out (deterministic: no atomics).
  float* partials;
  int32_t segments;
  int64_t groups;
  int64_t x_rows;
  int64_t x_cols;
  int64_t dy_rows;
  int64_t dy_cols;
  int64_t nnz;
  int32_t block_size;
};

// The same cases as LaunchConvHaloTensorCore (16-bit inputs, bs 32, unit strides, output rows of
// at most 128 positions, at most 9 taps, a halo of at most 256 positions); cudaErrorNotSupported,
// having launched nothing, for anything else.
cudaError_t LaunchConvDwHaloTensorCore(ElementType input, ElementType output,
                                       const ConvDwArgs& args, const ConvGather& conv,
                                       cudaStream_t stream);

}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_CONV_HALO_TENSOR_CORE_H_
