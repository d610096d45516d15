// XLA FFI handlers for the CPU platform; see docs/ffi_contract.md for operands and attributes.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CPU_BLOCKSPARSE_CPU_FFI_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CPU_BLOCKSPARSE_CPU_FFI_H_

#include "xla/ffi/api/ffi.h"

// jbs_bsmm: (a, w, offsets, entries) -> out; attrs transpose_w: bool, precision: int32.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JbsBsmmCpu);
// jbs_sampled: (a, b, coords) -> out; attrs precision: int32.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JbsSampledCpu);
// jbs_conv: (a, w, offsets, entries) -> out; attrs transpose_w: bool, precision: int32,
// kernel, strides, dilation, pad_lo: 3 x int64 each.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JbsConvCpu);
// jbs_conv_dw: (a, b, coords) -> out; attrs precision: int32, kernel, strides, dilation, pad_lo.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JbsConvDwCpu);

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CPU_BLOCKSPARSE_CPU_FFI_H_
