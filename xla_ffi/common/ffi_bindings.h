// The operands and attributes of the FFI targets (docs/ffi_contract.md), bound in one place for
// the CPU and the CUDA handlers, so that the two platforms decode a call the same way. Each
// function appends its part to a binding; a handler's binding starts with what its platform
// needs first (the CUDA stream) and ends with what only that target takes.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_COMMON_FFI_BINDINGS_H_
#define JAX_BLOCKSPARSE_XLA_FFI_COMMON_FFI_BINDINGS_H_

#include <cstdint>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace jbs::ffi_bindings {

namespace ffi = ::xla::ffi;

// Appends `count` >= 1 buffer arguments. Bindings are move-only and only they may move
// themselves, so each step hands the next a temporary.
template <int count, typename Binding>
auto BindBufferArgs(Binding&& binding) {
  if constexpr (count == 1) {
    return std::move(binding).template Arg<ffi::AnyBuffer>();
  } else {
    return BindBufferArgs<count - 1>(std::move(binding).template Arg<ffi::AnyBuffer>());
  }
}

// jbs_bsmm and jbs_conv: (a, w, offsets, entries) -> out.
template <typename Binding>
auto BindProductOperands(Binding&& binding) {
  return BindBufferArgs<4>(std::move(binding)).template Ret<ffi::AnyBuffer>();
}

// jbs_sampled and jbs_conv_dw: (a, b, coords) -> out. For jbs_conv_dw, a = x and b = dy.
template <typename Binding>
auto BindSampledOperands(Binding&& binding) {
  return BindBufferArgs<3>(std::move(binding)).template Ret<ffi::AnyBuffer>();
}

// The convolution geometry of jbs_conv and jbs_conv_dw: 3 x int64 each.
template <typename Binding>
auto BindConvGeometry(Binding&& binding) {
  return std::move(binding)
      .template Attr<ffi::Span<const int64_t>>("kernel")
      .template Attr<ffi::Span<const int64_t>>("strides")
      .template Attr<ffi::Span<const int64_t>>("dilation")
      .template Attr<ffi::Span<const int64_t>>("pad_lo");
}

}  // namespace jbs::ffi_bindings

#endif  // JAX_BLOCKSPARSE_XLA_FFI_COMMON_FFI_BINDINGS_H_
