// Thin FFI layer: validate per docs/ffi_contract.md (shared with the CUDA handlers), check the
// tables' contents (cheap here, since CPU buffers are host memory), then dispatch on the
// (input, output) dtype pair to the templated kernels.
#include "xla_ffi/cpu/blocksparse_cpu_ffi.h"

#include <cstdint>
#include <string>
#include <type_traits>

#include "xla/ffi/api/ffi.h"
#include "xla_ffi/common/ffi_bindings.h"
#include "xla_ffi/common/ffi_validation.h"
#include "xla_ffi/cpu/blocksparse_cpu_kernels.h"
#include "xla_ffi/cpu/conv_cpu_kernels.h"

namespace ffi = xla::ffi;

using jbs::ffi_bindings::BindConvGeometry;
using jbs::ffi_bindings::BindProductOperands;
using jbs::ffi_bindings::BindSampledOperands;

namespace {

using jbs::cpu::Bf16Bits;
using jbs::cpu::F16Bits;
using jbs::ffi_validation::BsmmProblem;
using jbs::ffi_validation::ConvDwProblem;
using jbs::ffi_validation::ConvProblem;
using jbs::ffi_validation::SampledProblem;

// Calls fn(In*, Out*) with null pointers whose static types select the kernel instantiation.
// The pair has already been validated against the contract.
template <typename Fn>
void DispatchDtypes(ffi::DataType in, ffi::DataType out, Fn&& fn) {
  using ffi::DataType;
  const bool wide_out = out == DataType::F32 && in != DataType::F32;
  switch (in) {
    case DataType::F32: return fn(static_cast<float*>(nullptr), static_cast<float*>(nullptr));
    case DataType::F64: return fn(static_cast<double*>(nullptr), static_cast<double*>(nullptr));
    case DataType::BF16:
      return wide_out ? fn(static_cast<Bf16Bits*>(nullptr), static_cast<float*>(nullptr))
                      : fn(static_cast<Bf16Bits*>(nullptr), static_cast<Bf16Bits*>(nullptr));
    case DataType::F16:
      return wide_out ? fn(static_cast<F16Bits*>(nullptr), static_cast<float*>(nullptr))
                      : fn(static_cast<F16Bits*>(nullptr), static_cast<F16Bits*>(nullptr));
    default: return;
  }
}

// Calls fn(a_data, b_data, out_data) with the data of the two value inputs (a and w, or a and
// b) and of out typed by the validated dtypes, so that fn's kernel call deduces its
// instantiation from them.
template <typename Fn>
void WithTypedData(ffi::DataType input, ffi::DataType output, const ffi::AnyBuffer& a,
                   const ffi::AnyBuffer& b, const ffi::AnyBuffer& out, Fn&& fn) {
  DispatchDtypes(input, output, [&](auto* in_tag, auto* out_tag) {
    using In = std::remove_pointer_t<decltype(in_tag)>;
    using Out = std::remove_pointer_t<decltype(out_tag)>;
    fn(static_cast<const In*>(a.untyped_data()), static_cast<const In*>(b.untyped_data()),
       static_cast<Out*>(out.untyped_data()));
  });
}

ffi::Error OutOfRange(const char* target, const std::string& what) {
  return ffi::Error::InvalidArgument(std::string(target) + ": " + what);
}

// A bad table becomes an error instead of an out-of-bounds read. `a_blocks` is the number of
// bs-wide column blocks of the gathered operand.
ffi::Error CheckBsmmTables(const char* target, const int32_t* offsets, const int32_t* entries,
                           int64_t out_blocks, int64_t nnz, int64_t a_blocks) {
  for (int64_t o = 0; o <= out_blocks; ++o) {
    const int64_t lower = o == 0 ? 0 : offsets[o - 1];
    if (offsets[o] < lower || offsets[o] > nnz) {
      return OutOfRange(target, "offsets must be non-decreasing within [0, nnz=" +
                                    std::to_string(nnz) + "]; offsets[" + std::to_string(o) +
                                    "] = " + std::to_string(offsets[o]));
    }
  }
  for (int64_t e = 0; e < nnz; ++e) {
    const int32_t a_block = entries[2 * e], w_block = entries[2 * e + 1];
    if (a_block < 0 || a_block >= a_blocks || w_block < 0 || w_block >= nnz) {
      return OutOfRange(target, "entries[" + std::to_string(e) + "] = (" +
                                    std::to_string(a_block) + ", " + std::to_string(w_block) +
                                    ") out of range for " + std::to_string(a_blocks) +
                                    " input blocks and " + std::to_string(nnz) + " weight blocks");
    }
  }
  return ffi::Error::Success();
}

ffi::Error CheckCoords(const char* target, const int32_t* coords, int64_t nnz, int64_t a_blocks,
                       int64_t b_blocks) {
  for (int64_t k = 0; k < nnz; ++k) {
    const int32_t i = coords[2 * k], j = coords[2 * k + 1];
    if (i < 0 || i >= a_blocks || j < 0 || j >= b_blocks) {
      return OutOfRange(target, "coords[" + std::to_string(k) + "] = (" + std::to_string(i) +
                                    ", " + std::to_string(j) + ") out of range for a block grid of " +
                                    std::to_string(a_blocks) + " x " + std::to_string(b_blocks));
    }
  }
  return ffi::Error::Success();
}

ffi::Error BsmmImpl(ffi::AnyBuffer a, ffi::AnyBuffer w, ffi::AnyBuffer offsets,
                    ffi::AnyBuffer entries, ffi::Result<ffi::AnyBuffer> out, bool transpose_w,
                    int32_t precision) {
  constexpr const char* kTarget = "jbs_bsmm";
  BsmmProblem p;
  JBS_RETURN_IF_ERROR(jbs::ffi_validation::ValidateBsmm(kTarget, a, w, offsets, entries, *out,
                                                        precision, p));
  const int32_t* offset_data = offsets.reinterpret_data<int32_t>();
  const int32_t* entry_data = entries.reinterpret_data<int32_t>();
  JBS_RETURN_IF_ERROR(CheckBsmmTables(kTarget, offset_data, entry_data, p.out_blocks, p.nnz,
                                      p.a_cols / p.block_size));
  const jbs::cpu::BsmmShape shape{p.groups, p.rows, p.a_cols, p.out_blocks, p.nnz, p.block_size,
                                  transpose_w};
  // precision only selects TF32 on GPU; the CPU kernels always accumulate at full precision.
  WithTypedData(p.input, p.output, a, w, *out,
                [&](auto* a_data, auto* w_data, auto* out_data) {
                  jbs::cpu::BlockSparseMatmul(a_data, w_data, offset_data, entry_data, out_data,
                                              shape);
                });
  return ffi::Error::Success();
}

ffi::Error SampledImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::AnyBuffer coords,
                       ffi::Result<ffi::AnyBuffer> out, int32_t precision) {
  constexpr const char* kTarget = "jbs_sampled";
  SampledProblem p;
  JBS_RETURN_IF_ERROR(
      jbs::ffi_validation::ValidateSampled(kTarget, a, b, coords, *out, precision, p));
  const int32_t* coord_data = coords.reinterpret_data<int32_t>();
  JBS_RETURN_IF_ERROR(CheckCoords(kTarget, coord_data, p.nnz, p.a_cols / p.block_size,
                                  p.b_cols / p.block_size));
  const jbs::cpu::SampledShape shape{p.groups, p.rows, p.a_cols, p.b_cols, p.nnz, p.block_size};
  WithTypedData(p.input, p.output, a, b, *out,
                [&](auto* a_data, auto* b_data, auto* out_data) {
                  jbs::cpu::SampledDenseDense(a_data, b_data, coord_data, out_data, shape);
                });
  return ffi::Error::Success();
}

jbs::cpu::ConvGeometry CpuGeometry(const jbs::ffi_validation::ConvGeometry& g) {
  jbs::cpu::ConvGeometry out;
  for (int i = 0; i < 3; ++i) {
    out.kernel[i] = g.kernel[i];
    out.strides[i] = g.strides[i];
    out.dilation[i] = g.dilation[i];
    out.pad_lo[i] = g.pad_lo[i];
  }
  return out;
}

ffi::Error ConvImpl(ffi::AnyBuffer a, ffi::AnyBuffer w, ffi::AnyBuffer offsets,
                    ffi::AnyBuffer entries, ffi::Result<ffi::AnyBuffer> out, bool transpose_w,
                    int32_t precision, ffi::Span<const int64_t> kernel,
                    ffi::Span<const int64_t> strides, ffi::Span<const int64_t> dilation,
                    ffi::Span<const int64_t> pad_lo) {
  constexpr const char* kTarget = "jbs_conv";
  ConvProblem p;
  JBS_RETURN_IF_ERROR(jbs::ffi_validation::ValidateConv(kTarget, a, w, offsets, entries, *out,
                                                        precision, kernel, strides, dilation,
                                                        pad_lo, p));
  const int32_t* offset_data = offsets.reinterpret_data<int32_t>();
  const int32_t* entry_data = entries.reinterpret_data<int32_t>();
  JBS_RETURN_IF_ERROR(CheckBsmmTables(kTarget, offset_data, entry_data, p.out_blocks, p.nnz,
                                      p.a_channels / p.block_size));
  const jbs::cpu::ConvShape shape{
      p.groups,     p.batch,    {p.a_spatial[0], p.a_spatial[1], p.a_spatial[2]},
      p.a_channels, {p.out_spatial[0], p.out_spatial[1], p.out_spatial[2]},
      p.out_blocks, p.nnz,      p.block_size,
      transpose_w,  CpuGeometry(p.geometry)};
  // precision only selects TF32 on GPU; the CPU kernels always accumulate at full precision.
  WithTypedData(p.input, p.output, a, w, *out,
                [&](auto* a_data, auto* w_data, auto* out_data) {
                  jbs::cpu::BlockSparseConv(a_data, w_data, offset_data, entry_data, out_data,
                                            shape);
                });
  return ffi::Error::Success();
}

ffi::Error ConvDwImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::AnyBuffer coords,
                      ffi::Result<ffi::AnyBuffer> out, int32_t precision,
                      ffi::Span<const int64_t> kernel, ffi::Span<const int64_t> strides,
                      ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> pad_lo) {
  constexpr const char* kTarget = "jbs_conv_dw";
  ConvDwProblem p;
  JBS_RETURN_IF_ERROR(jbs::ffi_validation::ValidateConvDw(kTarget, a, b, coords, *out, precision,
                                                          kernel, strides, dilation, pad_lo, p));
  const int32_t* coord_data = coords.reinterpret_data<int32_t>();
  JBS_RETURN_IF_ERROR(CheckCoords(kTarget, coord_data, p.nnz, p.x_channels / p.block_size,
                                  p.dy_channels / p.block_size));
  const jbs::cpu::ConvDwShape shape{
      p.groups,      p.batch, {p.x_spatial[0], p.x_spatial[1], p.x_spatial[2]},
      p.x_channels,  {p.dy_spatial[0], p.dy_spatial[1], p.dy_spatial[2]},
      p.dy_channels, p.nnz,   p.block_size,
      CpuGeometry(p.geometry)};
  WithTypedData(p.input, p.output, a, b, *out,
                [&](auto* x_data, auto* dy_data, auto* out_data) {
                  jbs::cpu::BlockSparseConvDw(x_data, dy_data, coord_data, out_data, shape);
                });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsBsmmCpu, BsmmImpl,
                              BindProductOperands(ffi::Ffi::Bind())
                                  .Attr<bool>("transpose_w")
                                  .Attr<int32_t>("precision"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsSampledCpu, SampledImpl,
                              BindSampledOperands(ffi::Ffi::Bind()).Attr<int32_t>("precision"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsConvCpu, ConvImpl,
                              BindConvGeometry(BindProductOperands(ffi::Ffi::Bind())
                                                   .Attr<bool>("transpose_w")
                                                   .Attr<int32_t>("precision")));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsConvDwCpu, ConvDwImpl,
                              BindConvGeometry(BindSampledOperands(ffi::Ffi::Bind())
                                                   .Attr<int32_t>("precision")));
