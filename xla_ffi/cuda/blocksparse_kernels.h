// Host API of the CUDA block-sparse kernels. Deliberately free of XLA FFI types so the
// kernels can be unit-tested or reused without the FFI headers.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BLOCKSPARSE_KERNELS_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BLOCKSPARSE_KERNELS_H_

#include <cstdint>

#include <cuda_runtime_api.h>

namespace jbs {

enum class ElementType : int32_t { kF32, kF64, kF16, kBF16 };

// Pairs allowed by the FFI contract: (T, T) for every T, plus (F16|BF16, F32).
bool IsSupportedTypePair(ElementType input, ElementType output);
bool IsSupportedBlockSize(int64_t block_size);

// out[g, :, o*bs:(o+1)*bs] = sum_{e in offsets[o]..offsets[o+1]} a[g, :, a_blk(e)*bs:+bs] @ op(w[g, k(e)])
struct BsmmArgs {
  const void* a;           // (groups, rows, a_cols), input type
  const void* w;           // (groups, nnz, bs, bs), input type
  const int32_t* offsets;  // (out_blocks + 1,)
  const int32_t* entries;  // (nnz, 2): (a_blk, k)
  void* out;               // (groups, rows, out_blocks * bs), output type
  int64_t groups;
  int64_t rows;    // rows of out per group
  int64_t a_rows;  // rows of a per group: == rows for a matmul, differs for a convolution
  int64_t a_cols;
  int64_t nnz;
  int64_t out_blocks;
  int32_t block_size;
  bool transpose_w;
  int32_t precision;  // 0 = DEFAULT (TF32 allowed), 1 = HIGHEST; unused by the SIMT kernels.
};

// How a convolution's output row reads `a` (jbs_conv, three spatial dimensions). Rows of a
// and out are (batch, d, h, w) row-major. Forward: out position p reads a at p*s + t*d - pad;
// transposed (the input gradient): out position q reads a at p = (q + pad - t*d) / s where
// that division is exact. Out-of-range positions contribute nothing.
struct ConvGather {
  int32_t a_spatial[3];
  int32_t out_spatial[3];
  int32_t kernel[3];
  int32_t stride[3];
  int32_t dilation[3];
  int32_t pad_lo[3];
  int32_t taps;
  bool transposed;
};

// out[g, k] = a[g, :, i_k*bs:+bs].T @ b[g, :, j_k*bs:+bs]
struct SampledArgs {
  const void* a;          // (groups, rows, a_cols), input type
  const void* b;          // (groups, rows, b_cols), input type
  const int32_t* coords;  // (nnz, 2): (i_k, j_k)
  void* out;              // (groups, nnz, bs, bs), output type
  int64_t groups;
  int64_t rows;
  int64_t a_cols;
  int64_t b_cols;
  int64_t nnz;
  int32_t block_size;
  int32_t precision;
};

// Both launchers only enqueue work on `stream`: no synchronization, no allocation. They
// return cudaErrorInvalidValue for an unsupported (type pair, block size) and otherwise
// cudaSuccess without consuming the launch error state; the caller checks
// cudaGetLastError() afterwards. Empty problems launch nothing.
cudaError_t LaunchBsmm(ElementType input, ElementType output, const BsmmArgs& args,
                       cudaStream_t stream);
cudaError_t LaunchSampled(ElementType input, ElementType output, const SampledArgs& args,
                          cudaStream_t stream);

}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BLOCKSPARSE_KERNELS_H_
