// XLA FFI handler symbols of the CUDA block-sparse kernels. The contract they implement is
// docs/ffi_contract.md.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BLOCKSPARSE_CUDA_FFI_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BLOCKSPARSE_CUDA_FFI_H_

#include "xla/ffi/api/api.h"

XLA_FFI_DECLARE_HANDLER_SYMBOL(JbsBsmmCuda);
// jbs_bsmm with the dense operand stored transposed (sm_90a, 16-bit, bs 16 and 32 only).
XLA_FFI_DECLARE_HANDLER_SYMBOL(JbsBsmmAtCuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JbsSampledCuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JbsConvCuda);
// jbs_conv_dw (plus a partial-sum result) for the halo-tile cases only.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JbsConvDwHaloCuda);

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BLOCKSPARSE_CUDA_FFI_H_
