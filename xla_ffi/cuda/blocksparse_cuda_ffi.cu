// Thin XLA FFI handlers: decode and validate the call, then hand plain pointers and sizes to
// the launchers in blocksparse_kernels.cu. Nothing here synchronizes or allocates, so the
// handlers are safe inside CUDA graphs (command buffers).

#include "blocksparse_cuda_ffi.h"

#include <cuda_runtime_api.h>

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "blocksparse_kernels.h"
#include "bsmm_tensor_core.h"
#include "conv_halo_tensor_core.h"
#include "xla/ffi/api/ffi.h"
#include "xla_ffi/common/ffi_bindings.h"
#include "xla_ffi/common/ffi_validation.h"

namespace ffi = xla::ffi;

using jbs::ffi_bindings::BindConvGeometry;
using jbs::ffi_bindings::BindProductOperands;
using jbs::ffi_bindings::BindSampledOperands;

namespace {

// Every CUDA handler runs on the stream XLA passes first.
auto BindStream() { return ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>(); }

using jbs::ffi_validation::BsmmProblem;
using jbs::ffi_validation::ConvDwProblem;
using jbs::ffi_validation::ConvProblem;
using jbs::ffi_validation::SampledProblem;

jbs::ElementType ToElementType(ffi::DataType dtype) {
  switch (dtype) {
    case ffi::DataType::F64: return jbs::ElementType::kF64;
    case ffi::DataType::F16: return jbs::ElementType::kF16;
    case ffi::DataType::BF16: return jbs::ElementType::kBF16;
    default: return jbs::ElementType::kF32;  // validation admits no other dtype
  }
}

ffi::Error LaunchStatus(const char* target, cudaError_t launch_status) {
  // The launcher reports configuration problems itself; asynchronous launch failures surface
  // through cudaGetLastError.
  const cudaError_t status = launch_status != cudaSuccess ? launch_status : cudaGetLastError();
  if (status != cudaSuccess) {
    return ffi::Error::Internal(std::string(target) + ": CUDA launch failed: " +
                                cudaGetErrorString(status));
  }
  return ffi::Error::Success();
}

// The buffers and attributes of a jbs_bsmm or jbs_conv call; the callers fill in the shape.
jbs::BsmmArgs ProductArgs(const ffi::AnyBuffer& a, const ffi::AnyBuffer& w,
                          const ffi::AnyBuffer& offsets, const ffi::AnyBuffer& entries,
                          ffi::Result<ffi::AnyBuffer>& out, bool transpose_w, int32_t precision) {
  jbs::BsmmArgs args{};
  args.a = a.untyped_data();
  args.w = w.untyped_data();
  args.offsets = static_cast<const int32_t*>(offsets.untyped_data());
  args.entries = static_cast<const int32_t*>(entries.untyped_data());
  args.out = out->untyped_data();
  args.transpose_w = transpose_w;
  args.precision = precision;
  return args;
}

// jbs_bsmm, and with kATransposed jbs_bsmm_at: the same product with a stored transposed.
template <bool kATransposed>
ffi::Error BsmmImpl(cudaStream_t stream, ffi::AnyBuffer a, ffi::AnyBuffer w,
                    ffi::AnyBuffer offsets, ffi::AnyBuffer entries,
                    ffi::Result<ffi::AnyBuffer> out, bool transpose_w, int32_t precision) {
  constexpr const char* kTarget = kATransposed ? "jbs_bsmm_at" : "jbs_bsmm";
  BsmmProblem p;
  JBS_RETURN_IF_ERROR(jbs::ffi_validation::ValidateBsmm(kTarget, a, w, offsets, entries, *out,
                                                        precision, p, kATransposed));
  if (p.groups == 0 || p.rows == 0 || p.out_blocks == 0) return ffi::Error::Success();

  jbs::BsmmArgs args = ProductArgs(a, w, offsets, entries, out, transpose_w, precision);
  args.groups = p.groups;
  args.rows = p.rows;
  args.a_rows = p.rows;
  args.a_cols = p.a_cols;
  args.nnz = p.nnz;
  args.out_blocks = p.out_blocks;
  args.block_size = static_cast<int32_t>(p.block_size);
  if constexpr (kATransposed) {
    const cudaError_t status = jbs::LaunchBsmmTransposedA(ToElementType(p.input),
                                                          ToElementType(p.output), args, stream);
    if (status == cudaErrorNotSupported) {
      return ffi::Error::InvalidArgument(
          std::string(kTarget) + ": takes 16-bit inputs, bs 16 or 32, M a multiple of 8, on a "
          "Hopper (sm_90a) build and device (the Python side routes nothing else here)");
    }
    return LaunchStatus(kTarget, status);
  } else {
    return LaunchStatus(kTarget, jbs::LaunchBsmm(ToElementType(p.input), ToElementType(p.output),
                                                 args, stream));
  }
}

ffi::Error SampledImpl(cudaStream_t stream, ffi::AnyBuffer a, ffi::AnyBuffer b,
                       ffi::AnyBuffer coords, ffi::Result<ffi::AnyBuffer> out,
                       int32_t precision) {
  constexpr const char* kTarget = "jbs_sampled";
  SampledProblem p;
  JBS_RETURN_IF_ERROR(
      jbs::ffi_validation::ValidateSampled(kTarget, a, b, coords, *out, precision, p));
  if (p.groups == 0 || p.nnz == 0) return ffi::Error::Success();

  jbs::SampledArgs args;
  args.a = a.untyped_data();
  args.b = b.untyped_data();
  args.coords = static_cast<const int32_t*>(coords.untyped_data());
  args.out = out->untyped_data();
  args.groups = p.groups;
  args.rows = p.rows;
  args.a_cols = p.a_cols;
  args.b_cols = p.b_cols;
  args.nnz = p.nnz;
  args.block_size = static_cast<int32_t>(p.block_size);
  args.precision = precision;
  return LaunchStatus(kTarget, jbs::LaunchSampled(ToElementType(p.input), ToElementType(p.output),
                                                  args, stream));
}

bool FitsInt32(int64_t value) { return value >= INT32_MIN && value <= INT32_MAX; }

// The kernels' 32-bit view of a convolution; false where positions would overflow it (they
// form o*s + t*d - pad, and q + pad - t*d, in 32-bit arithmetic).
bool MakeGather(const jbs::ffi_validation::ConvGeometry& geometry, const int64_t (&a_spatial)[3],
                const int64_t (&out_spatial)[3], bool transposed, jbs::ConvGather& gather) {
  bool fits = FitsInt32(geometry.taps);
  for (int d = 0; d < 3; ++d) {
    gather.a_spatial[d] = static_cast<int32_t>(a_spatial[d]);
    gather.out_spatial[d] = static_cast<int32_t>(out_spatial[d]);
    gather.kernel[d] = static_cast<int32_t>(geometry.kernel[d]);
    gather.stride[d] = static_cast<int32_t>(geometry.strides[d]);
    gather.dilation[d] = static_cast<int32_t>(geometry.dilation[d]);
    gather.pad_lo[d] = static_cast<int32_t>(geometry.pad_lo[d]);
    fits = fits && FitsInt32(std::llabs(geometry.pad_lo[d]) + out_spatial[d] * geometry.strides[d] +
                             geometry.kernel[d] * geometry.dilation[d] + a_spatial[d]);
  }
  gather.taps = static_cast<int32_t>(geometry.taps);
  gather.transposed = transposed;
  return fits;
}

ffi::Error ConvImpl(cudaStream_t stream, ffi::AnyBuffer a, ffi::AnyBuffer w,
                    ffi::AnyBuffer offsets, ffi::AnyBuffer entries,
                    ffi::Result<ffi::AnyBuffer> out, bool transpose_w, int32_t precision,
                    ffi::Span<const int64_t> kernel, ffi::Span<const int64_t> strides,
                    ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> pad_lo) {
  constexpr const char* kTarget = "jbs_conv";
  ConvProblem p;
  JBS_RETURN_IF_ERROR(jbs::ffi_validation::ValidateConv(kTarget, a, w, offsets, entries, *out,
                                                        precision, kernel, strides, dilation,
                                                        pad_lo, p));
  if (p.input == ffi::DataType::F64) {
    return ffi::Error(ffi::ErrorCode::kUnimplemented,
                      std::string(kTarget) + ": float64 has no CUDA kernel (the Python side "
                      "lowers float64 convolutions to the matmul composite)");
  }
  const int64_t out_size = p.out_spatial[0] * p.out_spatial[1] * p.out_spatial[2];
  const int64_t a_size = p.a_spatial[0] * p.a_spatial[1] * p.a_spatial[2];
  if (p.groups == 0 || p.batch == 0 || out_size == 0 || p.out_blocks == 0) {
    return ffi::Error::Success();
  }
  jbs::ConvGather gather{};
  if (!MakeGather(p.geometry, p.a_spatial, p.out_spatial, transpose_w, gather)) {
    return ffi::Error::InvalidArgument(std::string(kTarget) +
                                       ": spatial extents too large for the CUDA kernel");
  }

  jbs::BsmmArgs args = ProductArgs(a, w, offsets, entries, out, transpose_w, precision);
  args.groups = p.groups;
  args.rows = p.batch * out_size;
  args.a_rows = p.batch * a_size;
  args.a_cols = p.a_channels;
  args.nnz = p.nnz;
  args.out_blocks = p.out_blocks;
  args.block_size = static_cast<int32_t>(p.block_size);
  return LaunchStatus(kTarget, jbs::LaunchConvTensorCore(ToElementType(p.input),
                                                         ToElementType(p.output), args, gather,
                                                         stream));
}

// The halo filter gradient's second result, the float partial sums of its segments: (segments,
// *out's dimensions) with segments >= 2, or segments = 0 for a gradient computed in one
// segment straight into out. Its number of segments, or -1 where the shape or type is wrong.
int64_t DwSegments(const ffi::AnyBuffer& partials, const ffi::AnyBuffer& out) {
  const auto dims = partials.dimensions();
  const auto out_dims = out.dimensions();
  if (partials.element_type() != ffi::DataType::F32 || dims.size() != out_dims.size() + 1) {
    return -1;
  }
  for (size_t d = 0; d < out_dims.size(); ++d) {
    if (dims[d + 1] != out_dims[d]) return -1;
  }
  if (dims[0] == 0) return 1;
  return dims[0] >= 2 && dims[0] <= jbs::kMaxConvDwSegments ? dims[0] : -1;
}

// jbs_conv_dw_halo: the jbs_conv_dw contract (docs/ffi_contract.md), plus the partial-sum
// result, for the cases the halo-tile kernel takes; the Python side sends only those.
ffi::Error ConvDwHaloImpl(cudaStream_t stream, ffi::AnyBuffer a, ffi::AnyBuffer b,
                          ffi::AnyBuffer coords, ffi::Result<ffi::AnyBuffer> out,
                          ffi::Result<ffi::AnyBuffer> partials, int32_t precision,
                          ffi::Span<const int64_t> kernel,
                          ffi::Span<const int64_t> strides, ffi::Span<const int64_t> dilation,
                          ffi::Span<const int64_t> pad_lo) {
  constexpr const char* kTarget = "jbs_conv_dw_halo";
  ConvDwProblem p;
  JBS_RETURN_IF_ERROR(jbs::ffi_validation::ValidateConvDw(kTarget, a, b, coords, *out, precision,
                                                          kernel, strides, dilation, pad_lo, p));
  const int64_t segments = DwSegments(*partials, *out);
  if (segments < 0) {
    return ffi::Error::InvalidArgument(
        std::string(kTarget) + ": the partial sums must be float32 of shape (segments, " +
        "*out.shape) with 2 <= segments <= " + std::to_string(jbs::kMaxConvDwSegments) +
        ", or segments = 0 for none; got " +
        jbs::ffi_validation::Describe("partials", *partials) + " for " +
        jbs::ffi_validation::Describe("out", *out));
  }
  const int64_t x_size = p.x_spatial[0] * p.x_spatial[1] * p.x_spatial[2];
  const int64_t dy_size = p.dy_spatial[0] * p.dy_spatial[1] * p.dy_spatial[2];
  if (p.groups == 0 || p.nnz == 0) return ffi::Error::Success();
  jbs::ConvGather gather{};
  if (!MakeGather(p.geometry, p.x_spatial, p.dy_spatial, /*transposed=*/false, gather)) {
    return ffi::Error::InvalidArgument(std::string(kTarget) +
                                       ": spatial extents too large for the CUDA kernel");
  }
  jbs::ConvDwArgs args{};
  args.x = a.untyped_data();
  args.dy = b.untyped_data();
  args.coords = static_cast<const int32_t*>(coords.untyped_data());
  args.out = out->untyped_data();
  args.partials = static_cast<float*>(partials->untyped_data());
  args.segments = static_cast<int32_t>(segments);
  args.groups = p.groups;
  args.x_rows = p.batch * x_size;
  args.x_cols = p.x_channels;
  args.dy_rows = p.batch * dy_size;
  args.dy_cols = p.dy_channels;
  args.nnz = p.nnz;
  args.block_size = static_cast<int32_t>(p.block_size);
  const cudaError_t status = jbs::LaunchConvDwHaloTensorCore(
      ToElementType(p.input), ToElementType(p.output), args, gather, stream);
  if (status == cudaErrorNotSupported) {
    return ffi::Error::InvalidArgument(
        std::string(kTarget) + ": takes 16-bit inputs, bs 32, unit strides, output rows of at "
        "most 128 positions, at most 9 taps and a halo of at most 256 positions (the Python side "
        "sends every other filter gradient to the matmul composite)");
  }
  return LaunchStatus(kTarget, status);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsBsmmCuda, BsmmImpl<false>,
                              BindProductOperands(BindStream())
                                  .Attr<bool>("transpose_w")
                                  .Attr<int32_t>("precision"),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsBsmmAtCuda, BsmmImpl<true>,
                              BindProductOperands(BindStream())
                                  .Attr<bool>("transpose_w")
                                  .Attr<int32_t>("precision"),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsSampledCuda, SampledImpl,
                              BindSampledOperands(BindStream()).Attr<int32_t>("precision"),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsConvCuda, ConvImpl,
                              BindConvGeometry(BindProductOperands(BindStream())
                                                   .Attr<bool>("transpose_w")
                                                   .Attr<int32_t>("precision")),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsConvDwHaloCuda, ConvDwHaloImpl,
                              BindConvGeometry(BindSampledOperands(BindStream())
                                                   .Ret<ffi::AnyBuffer>()  // partials
                                                   .Attr<int32_t>("precision")),
                              {ffi::Traits::kCmdBufferCompatible});
