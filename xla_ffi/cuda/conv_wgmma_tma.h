// Stride-1 block-sparse convolution on sm_90a with TMA and wgmma (experiment `wgmma_tma_conv`,
// benchmarks/NOTES.md v21): jbs_conv forward and input gradient.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_CONV_WGMMA_TMA_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_CONV_WGMMA_TMA_H_

#include <cuda_runtime_api.h>

#include "blocksparse_kernels.h"

namespace jbs {

// Same arguments and return convention as LaunchConvTensorCore. Covers 16-bit inputs, bs 32,
// unit strides, where WgmmaAvailable(); returns cudaErrorNotSupported, having launched
// nothing, for anything else (shapes past a tensor map's limits or a stage that does not fit
// shared memory included).
cudaError_t LaunchConvWgmmaTma(ElementType input, ElementType output, const BsmmArgs& args,
                               const ConvGather& conv, cudaStream_t stream);

}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_CONV_WGMMA_TMA_H_
