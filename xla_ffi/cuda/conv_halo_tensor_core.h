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

}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_CONV_HALO_TENSOR_CORE_H_
