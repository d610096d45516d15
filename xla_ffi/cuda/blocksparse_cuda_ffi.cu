// Thin XLA FFI handlers: decode and validate the call, then hand plain pointers and sizes to
// the launchers in blocksparse_kernels.cu. Nothing here synchronizes or allocates, so the
// handlers are safe inside CUDA graphs (command buffers).

#include "blocksparse_cuda_ffi.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>
#include <string>

#include "blocksparse_kernels.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

std::string DTypeName(ffi::DataType dtype) {
  switch (dtype) {
    case ffi::DataType::F32: return "float32";
    case ffi::DataType::F64: return "float64";
    case ffi::DataType::F16: return "float16";
    case ffi::DataType::BF16: return "bfloat16";
    case ffi::DataType::S32: return "int32";
    case ffi::DataType::S64: return "int64";
    default: return "dtype#" + std::to_string(static_cast<int>(dtype));
  }
}

std::string Describe(const ffi::AnyBuffer& buffer) {
  std::string text = DTypeName(buffer.element_type()) + "[";
  const auto dims = buffer.dimensions();
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) text += ",";
    text += std::to_string(dims[i]);
  }
  return text + "]";
}

std::optional<jbs::ElementType> ToElementType(ffi::DataType dtype) {
  switch (dtype) {
    case ffi::DataType::F32: return jbs::ElementType::kF32;
    case ffi::DataType::F64: return jbs::ElementType::kF64;
    case ffi::DataType::F16: return jbs::ElementType::kF16;
    case ffi::DataType::BF16: return jbs::ElementType::kBF16;
    default: return std::nullopt;
  }
}

ffi::Error Invalid(const std::string& op, const std::string& what, const std::string& operands) {
  return ffi::Error::InvalidArgument(op + ": " + what + " (" + operands + ")");
}

// Shared by both targets: the float operand types must agree and (input, output) must be a
// pair the contract allows.
std::optional<ffi::Error> CheckTypes(const std::string& op, ffi::DataType input,
                                     ffi::DataType second_input, ffi::DataType output,
                                     const std::string& operands, jbs::ElementType* input_type,
                                     jbs::ElementType* output_type) {
  const auto in = ToElementType(input);
  const auto out = ToElementType(output);
  if (input != second_input || !in || !out || !jbs::IsSupportedTypePair(*in, *out)) {
    return Invalid(op,
                   "unsupported dtypes " + DTypeName(input) + "/" + DTypeName(second_input) +
                       " -> " + DTypeName(output) +
                       "; expected T in {float32, bfloat16, float16, float64} and output T or "
                       "float32 (float64 only with float64)",
                   operands);
  }
  *input_type = *in;
  *output_type = *out;
  return std::nullopt;
}

ffi::Error LaunchStatus(const std::string& op, cudaError_t launch_status) {
  // The launcher reports configuration problems itself; asynchronous launch failures surface
  // through cudaGetLastError.
  const cudaError_t status =
      launch_status != cudaSuccess ? launch_status : cudaGetLastError();
  if (status != cudaSuccess) {
    return ffi::Error::Internal(op + ": CUDA launch failed: " + cudaGetErrorString(status));
  }
  return ffi::Error::Success();
}

ffi::Error BsmmImpl(cudaStream_t stream, ffi::AnyBuffer a, ffi::AnyBuffer w,
                    ffi::AnyBuffer offsets, ffi::AnyBuffer entries,
                    ffi::Result<ffi::AnyBuffer> out, bool transpose_w, int32_t precision) {
  const std::string op = "jbs_bsmm";
  const std::string operands = "a " + Describe(a) + ", w " + Describe(w) + ", offsets " +
                               Describe(offsets) + ", entries " + Describe(entries) + ", out " +
                               Describe(*out);
  const auto a_dims = a.dimensions();
  const auto w_dims = w.dimensions();
  const auto offsets_dims = offsets.dimensions();
  const auto entries_dims = entries.dimensions();
  const auto out_dims = out->dimensions();

  if (a_dims.size() != 3 || w_dims.size() != 4 || offsets_dims.size() != 1 ||
      entries_dims.size() != 2 || out_dims.size() != 3) {
    return Invalid(op, "expected ranks a:3, w:4, offsets:1, entries:2, out:3", operands);
  }
  if (offsets.element_type() != ffi::DataType::S32 ||
      entries.element_type() != ffi::DataType::S32) {
    return Invalid(op, "offsets and entries must be int32", operands);
  }
  jbs::ElementType input_type, output_type;
  if (auto error = CheckTypes(op, a.element_type(), w.element_type(), out->element_type(),
                              operands, &input_type, &output_type)) {
    return *error;
  }
  const int64_t bs = w_dims[2];
  if (!jbs::IsSupportedBlockSize(bs)) {
    return Invalid(op, "block size w.shape[2] must be one of 8, 16, 32, 64, 128", operands);
  }
  if (w_dims[3] != bs) return Invalid(op, "w blocks must be square", operands);
  const int64_t groups = a_dims[0];
  const int64_t rows = a_dims[1];
  if (w_dims[0] != groups || out_dims[0] != groups) {
    return Invalid(op, "group dimension differs between a, w and out", operands);
  }
  if (out_dims[1] != rows) return Invalid(op, "a and out row counts differ", operands);
  if (a_dims[2] % bs != 0) {
    return Invalid(op, "a.shape[2] is not a multiple of the block size", operands);
  }
  if (offsets_dims[0] < 1) return Invalid(op, "offsets must have n_out_blocks + 1 >= 1 entries", operands);
  const int64_t out_blocks = offsets_dims[0] - 1;
  if (out_dims[2] != out_blocks * bs) {
    return Invalid(op, "out.shape[2] must equal (offsets.shape[0] - 1) * block size", operands);
  }
  const int64_t nnz = w_dims[1];
  if (entries_dims[0] != nnz || entries_dims[1] != 2) {
    return Invalid(op, "entries must have shape (nnz, 2) with nnz = w.shape[1]", operands);
  }

  if (groups == 0 || rows == 0 || out_blocks == 0) return ffi::Error::Success();

  jbs::BsmmArgs args;
  args.a = a.untyped_data();
  args.w = w.untyped_data();
  args.offsets = static_cast<const int32_t*>(offsets.untyped_data());
  args.entries = static_cast<const int32_t*>(entries.untyped_data());
  args.out = out->untyped_data();
  args.groups = groups;
  args.rows = rows;
  args.a_cols = a_dims[2];
  args.nnz = nnz;
  args.out_blocks = out_blocks;
  args.block_size = static_cast<int32_t>(bs);
  args.transpose_w = transpose_w;
  args.precision = precision;
  return LaunchStatus(op, jbs::LaunchBsmm(input_type, output_type, args, stream));
}

ffi::Error SampledImpl(cudaStream_t stream, ffi::AnyBuffer a, ffi::AnyBuffer b,
                       ffi::AnyBuffer coords, ffi::Result<ffi::AnyBuffer> out,
                       int32_t precision) {
  const std::string op = "jbs_sampled";
  const std::string operands = "a " + Describe(a) + ", b " + Describe(b) + ", coords " +
                               Describe(coords) + ", out " + Describe(*out);
  const auto a_dims = a.dimensions();
  const auto b_dims = b.dimensions();
  const auto coords_dims = coords.dimensions();
  const auto out_dims = out->dimensions();

  if (a_dims.size() != 3 || b_dims.size() != 3 || coords_dims.size() != 2 ||
      out_dims.size() != 4) {
    return Invalid(op, "expected ranks a:3, b:3, coords:2, out:4", operands);
  }
  if (coords.element_type() != ffi::DataType::S32) {
    return Invalid(op, "coords must be int32", operands);
  }
  jbs::ElementType input_type, output_type;
  if (auto error = CheckTypes(op, a.element_type(), b.element_type(), out->element_type(),
                              operands, &input_type, &output_type)) {
    return *error;
  }
  const int64_t bs = out_dims[2];
  if (!jbs::IsSupportedBlockSize(bs)) {
    return Invalid(op, "block size out.shape[2] must be one of 8, 16, 32, 64, 128", operands);
  }
  if (out_dims[3] != bs) return Invalid(op, "out blocks must be square", operands);
  const int64_t groups = a_dims[0];
  const int64_t rows = a_dims[1];
  if (b_dims[0] != groups || out_dims[0] != groups) {
    return Invalid(op, "group dimension differs between a, b and out", operands);
  }
  if (b_dims[1] != rows) return Invalid(op, "a and b row counts differ", operands);
  if (a_dims[2] % bs != 0 || b_dims[2] % bs != 0) {
    return Invalid(op, "a.shape[2] and b.shape[2] must be multiples of the block size",
                   operands);
  }
  const int64_t nnz = out_dims[1];
  if (coords_dims[0] != nnz || coords_dims[1] != 2) {
    return Invalid(op, "coords must have shape (nnz, 2) with nnz = out.shape[1]", operands);
  }

  if (groups == 0 || nnz == 0) return ffi::Error::Success();

  jbs::SampledArgs args;
  args.a = a.untyped_data();
  args.b = b.untyped_data();
  args.coords = static_cast<const int32_t*>(coords.untyped_data());
  args.out = out->untyped_data();
  args.groups = groups;
  args.rows = rows;
  args.a_cols = a_dims[2];
  args.b_cols = b_dims[2];
  args.nnz = nnz;
  args.block_size = static_cast<int32_t>(bs);
  args.precision = precision;
  return LaunchStatus(op, jbs::LaunchSampled(input_type, output_type, args, stream));
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsBsmmCuda, BsmmImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()  // a
                                  .Arg<ffi::AnyBuffer>()  // w
                                  .Arg<ffi::AnyBuffer>()  // offsets
                                  .Arg<ffi::AnyBuffer>()  // entries
                                  .Ret<ffi::AnyBuffer>()  // out
                                  .Attr<bool>("transpose_w")
                                  .Attr<int32_t>("precision"),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsSampledCuda, SampledImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()  // a
                                  .Arg<ffi::AnyBuffer>()  // b
                                  .Arg<ffi::AnyBuffer>()  // coords
                                  .Ret<ffi::AnyBuffer>()  // out
                                  .Attr<int32_t>("precision"),
                              {ffi::Traits::kCmdBufferCompatible});
