// Tensor-core (mma.sync) path of jbs_bsmm for bf16, f16 and float32 (TF32 / 3xTF32) inputs.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_TENSOR_CORE_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_TENSOR_CORE_H_

#include <cuda_runtime_api.h>

#include "blocksparse_kernels.h"

namespace jbs {

// Enqueues the product on `stream` (no sync, no allocation). Returns cudaErrorNotSupported,
// having launched nothing, for cases this path does not take (float64 input, buffers not
// 16-byte aligned, or a grid too large), so the caller can fall back to the SIMT kernel;
// otherwise cudaSuccess, leaving launch errors for the caller's cudaGetLastError().
// float32 uses TF32 for precision 0 and 3xTF32 (about float32 accuracy) otherwise.
cudaError_t LaunchBsmmTensorCore(ElementType input, ElementType output, const BsmmArgs& args,
                                 cudaStream_t stream);

// jbs_conv on the same kernel: the reduction of each output block-column runs over its
// (entry, tap) pairs and the rows of `a` are gathered per tap (implicit GEMM). args.rows counts
// the output rows (batch x output positions) and args.a_rows those of `a`. Same return
// convention; float64 is not supported here.
// jbs_bsmm_at: args.a holds the dense operand transposed, (groups, a_cols, rows); sm_90a,
// 16-bit, bs 16 and 32 only (cudaErrorNotSupported otherwise: no other kernel reads it).
cudaError_t LaunchBsmmTransposedA(ElementType input, ElementType output, const BsmmArgs& args,
                                  cudaStream_t stream);

cudaError_t LaunchConvTensorCore(ElementType input, ElementType output, const BsmmArgs& args,
                                 const ConvGather& conv, cudaStream_t stream);

}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_TENSOR_CORE_H_
