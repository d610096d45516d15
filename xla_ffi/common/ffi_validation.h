// The FFI contract (docs/ffi_contract.md) checked in one place, for the CPU and the CUDA
// handlers alike: ranks, dtypes, block size and every shape relation. A handler validates, then
// only dispatches. Messages name the target and every operand's shape and dtype, because they
// surface verbatim in the Python traceback.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_COMMON_FFI_VALIDATION_H_
#define JAX_BLOCKSPARSE_XLA_FFI_COMMON_FFI_VALIDATION_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace jbs::ffi_validation {

namespace ffi = ::xla::ffi;

inline std::string DtypeName(ffi::DataType dtype) {
  switch (dtype) {
    case ffi::DataType::F16: return "float16";
    case ffi::DataType::BF16: return "bfloat16";
    case ffi::DataType::F32: return "float32";
    case ffi::DataType::F64: return "float64";
    case ffi::DataType::S32: return "int32";
    case ffi::DataType::S64: return "int64";
    default: return "dtype#" + std::to_string(static_cast<int>(dtype));
  }
}

inline std::string Describe(const char* name, const ffi::AnyBuffer& buffer) {
  std::string text = std::string(name) + " (";
  const auto dims = buffer.dimensions();
  for (size_t d = 0; d < dims.size(); ++d) text += (d ? ", " : "") + std::to_string(dims[d]);
  return text + (dims.size() == 1 ? ",) " : ") ") + DtypeName(buffer.element_type());
}

inline bool IsSupportedBlockSize(int64_t bs) {
  return bs == 8 || bs == 16 || bs == 32 || bs == 64 || bs == 128;
}

// Inputs share T in {F32, BF16, F16, F64}; the output is T, or F32 for 16-bit T.
inline bool IsSupportedTypePair(ffi::DataType in, ffi::DataType out) {
  using ffi::DataType;
  const bool sixteen_bit = in == DataType::BF16 || in == DataType::F16;
  const bool floating = sixteen_bit || in == DataType::F32 || in == DataType::F64;
  return floating && (out == in || (sixteen_bit && out == DataType::F32));
}

struct BsmmProblem {
  int64_t groups;        // G
  int64_t rows;          // M
  int64_t a_cols;        // Ka
  int64_t out_blocks;    // offsets has out_blocks + 1 entries
  int64_t nnz;           // blocks per group in w
  int64_t block_size;    // bs
  ffi::DataType input;   // T
  ffi::DataType output;  // O
};

struct SampledProblem {
  int64_t groups;  // G
  int64_t rows;    // M, reduced over
  int64_t a_cols;  // C
  int64_t b_cols;  // N
  int64_t nnz;
  int64_t block_size;
  ffi::DataType input;
  ffi::DataType output;
};

namespace detail {

// `describe_operands` runs only when a check fails, so a valid call allocates nothing on the
// host (handlers run inside CUDA graphs and on every call).
template <typename DescribeOperands>
inline ffi::Error Invalid(const char* target, const std::string& what,
                          const DescribeOperands& describe_operands) {
  return ffi::Error::InvalidArgument(std::string(target) + ": " + what + "; got " +
                                     describe_operands());
}

inline bool HasRanks(std::initializer_list<std::pair<const ffi::AnyBuffer*, size_t>> expected) {
  for (const auto& [buffer, rank] : expected) {
    if (buffer->dimensions().size() != rank) return false;
  }
  return true;
}

inline const char* kTypeRule =
    "unsupported dtypes: inputs must share one of float32/bfloat16/float16/float64, and the output "
    "must be the input dtype or float32 for 16-bit inputs";
inline const char* kBlockRule = "blocks must be bs x bs with bs in {8, 16, 32, 64, 128}";

}  // namespace detail

inline ffi::Error CheckPrecision(const char* target, int32_t precision) {
  if (precision == 0 || precision == 1) return ffi::Error::Success();
  return ffi::Error::InvalidArgument(std::string(target) +
                                     ": precision must be 0 (DEFAULT) or 1 (HIGHEST), got " +
                                     std::to_string(precision));
}

// Fills `problem` when the call satisfies the contract. (Not ffi::ErrorOr: its converting
// constructors differ across the supported jaxlib versions.)
inline ffi::Error ValidateBsmm(const char* target, const ffi::AnyBuffer& a, const ffi::AnyBuffer& w,
                               const ffi::AnyBuffer& offsets, const ffi::AnyBuffer& entries,
                               const ffi::AnyBuffer& out, int32_t precision, BsmmProblem& problem) {
  using detail::Invalid;
  const auto operands = [&] {
    return Describe("a", a) + ", " + Describe("w", w) + ", " +
           Describe("offsets", offsets) + ", " +
           Describe("entries", entries) + ", " + Describe("out", out);
  };
  if (!detail::HasRanks({{&a, 3}, {&w, 4}, {&offsets, 1}, {&entries, 2}, {&out, 3}})) {
    return Invalid(target, "expected ranks a:3, w:4, offsets:1, entries:2, out:3", operands);
  }
  if (offsets.element_type() != ffi::DataType::S32 || entries.element_type() != ffi::DataType::S32) {
    return Invalid(target, "offsets and entries must be int32", operands);
  }
  if (a.element_type() != w.element_type() ||
      !IsSupportedTypePair(a.element_type(), out.element_type())) {
    return Invalid(target, detail::kTypeRule, operands);
  }
  if (ffi::Error error = CheckPrecision(target, precision); error.failure()) return error;

  const auto a_dims = a.dimensions();
  const auto w_dims = w.dimensions();
  const auto out_dims = out.dimensions();
  problem = BsmmProblem{a_dims[0], a_dims[1], a_dims[2], offsets.dimensions()[0] - 1, w_dims[1],
                        w_dims[2], a.element_type(), out.element_type()};
  const int64_t bs = problem.block_size;
  if (w_dims[3] != bs || !IsSupportedBlockSize(bs)) {
    return Invalid(target, std::string("w ") + detail::kBlockRule, operands);
  }
  if (w_dims[0] != problem.groups || out_dims[0] != problem.groups) {
    return Invalid(target, "the group dimension G must agree across a, w and out", operands);
  }
  if (out_dims[1] != problem.rows) return Invalid(target, "a and out must have the same M", operands);
  if (problem.a_cols % bs != 0) {
    return Invalid(target, "a's last dimension must be a multiple of bs", operands);
  }
  if (problem.out_blocks < 0 || out_dims[2] != problem.out_blocks * bs) {
    return Invalid(target, "out's last dimension must be (len(offsets) - 1) * bs", operands);
  }
  if (entries.dimensions()[0] != problem.nnz || entries.dimensions()[1] != 2) {
    return Invalid(target, "entries must have shape (nnz, 2) with nnz = w.shape[1]", operands);
  }
  return ffi::Error::Success();
}

inline ffi::Error ValidateSampled(const char* target, const ffi::AnyBuffer& a,
                                  const ffi::AnyBuffer& b, const ffi::AnyBuffer& coords,
                                  const ffi::AnyBuffer& out, int32_t precision,
                                  SampledProblem& problem) {
  using detail::Invalid;
  const auto operands = [&] {
    return Describe("a", a) + ", " + Describe("b", b) + ", " +
           Describe("coords", coords) + ", " + Describe("out", out);
  };
  if (!detail::HasRanks({{&a, 3}, {&b, 3}, {&coords, 2}, {&out, 4}})) {
    return Invalid(target, "expected ranks a:3, b:3, coords:2, out:4", operands);
  }
  if (coords.element_type() != ffi::DataType::S32) {
    return Invalid(target, "coords must be int32", operands);
  }
  if (a.element_type() != b.element_type() ||
      !IsSupportedTypePair(a.element_type(), out.element_type())) {
    return Invalid(target, detail::kTypeRule, operands);
  }
  if (ffi::Error error = CheckPrecision(target, precision); error.failure()) return error;

  const auto a_dims = a.dimensions();
  const auto b_dims = b.dimensions();
  const auto out_dims = out.dimensions();
  problem = SampledProblem{a_dims[0], a_dims[1], a_dims[2], b_dims[2], out_dims[1], out_dims[2],
                           a.element_type(), out.element_type()};
  const int64_t bs = problem.block_size;
  if (out_dims[3] != bs || !IsSupportedBlockSize(bs)) {
    return Invalid(target, std::string("out ") + detail::kBlockRule, operands);
  }
  if (b_dims[0] != problem.groups || out_dims[0] != problem.groups) {
    return Invalid(target, "the group dimension G must agree across a, b and out", operands);
  }
  if (b_dims[1] != problem.rows) return Invalid(target, "a and b must have the same M", operands);
  if (problem.a_cols % bs != 0 || problem.b_cols % bs != 0) {
    return Invalid(target, "the last dimensions of a and b must be multiples of bs", operands);
  }
  if (coords.dimensions()[0] != problem.nnz || coords.dimensions()[1] != 2) {
    return Invalid(target, "coords must have shape (nnz, 2) with nnz = out.shape[1]", operands);
  }
  return ffi::Error::Success();
}

// -- convolution (jbs_conv, jbs_conv_dw) -----------------------------------------------------

// The forward convolution's geometry, decoded from the four 3-element attributes.
struct ConvGeometry {
  int64_t kernel[3];
  int64_t strides[3];
  int64_t dilation[3];
  int64_t pad_lo[3];
  int64_t taps;  // kernel[0] * kernel[1] * kernel[2]
};

struct ConvProblem {
  int64_t groups;          // G
  int64_t batch;           // Nb
  int64_t a_spatial[3];    // (Da, Ha, Wa)
  int64_t a_channels;      // Ca
  int64_t out_spatial[3];  // (Do, Ho, Wo)
  int64_t out_blocks;      // offsets has out_blocks + 1 entries
  int64_t nnz;             // weight blocks per group
  int64_t block_size;      // bs
  ffi::DataType input;     // T
  ffi::DataType output;    // O
  ConvGeometry geometry;
};

struct ConvDwProblem {
  int64_t groups;          // G
  int64_t batch;           // Nb
  int64_t x_spatial[3];    // (D, H, W) of a = x
  int64_t x_channels;      // C
  int64_t dy_spatial[3];   // (Do, Ho, Wo) of b = dy
  int64_t dy_channels;     // N
  int64_t nnz;
  int64_t block_size;
  ffi::DataType input;
  ffi::DataType output;
  ConvGeometry geometry;
};

namespace detail {

inline std::string DescribeSpan(const char* name, ffi::Span<const int64_t> values) {
  std::string text = std::string(name) + "=(";
  for (size_t i = 0; i < values.size(); ++i) {
    text += (i ? ", " : "") + std::to_string(values[i]);
  }
  return text + ")";
}

}  // namespace detail

// kernel, strides and dilation: 3 positive ints each; pad_lo: 3 ints (negative crops).
inline ffi::Error ValidateConvGeometry(const char* target, ffi::Span<const int64_t> kernel,
                                       ffi::Span<const int64_t> strides,
                                       ffi::Span<const int64_t> dilation,
                                       ffi::Span<const int64_t> pad_lo, ConvGeometry& geometry) {
  const auto attrs = [&] {
    return detail::DescribeSpan("kernel", kernel) + ", " +
           detail::DescribeSpan("strides", strides) + ", " +
           detail::DescribeSpan("dilation", dilation) + ", " +
           detail::DescribeSpan("pad_lo", pad_lo);
  };
  if (kernel.size() != 3 || strides.size() != 3 || dilation.size() != 3 || pad_lo.size() != 3) {
    return detail::Invalid(target, "kernel, strides, dilation and pad_lo must have 3 elements each",
                           attrs);
  }
  geometry.taps = 1;
  for (int i = 0; i < 3; ++i) {
    if (kernel[i] < 1 || strides[i] < 1 || dilation[i] < 1) {
      return detail::Invalid(target, "kernel, strides and dilation must be positive", attrs);
    }
    geometry.kernel[i] = kernel[i];
    geometry.strides[i] = strides[i];
    geometry.dilation[i] = dilation[i];
    geometry.pad_lo[i] = pad_lo[i];
    geometry.taps *= kernel[i];
  }
  return ffi::Error::Success();
}

// jbs_conv: a (G, Nb, Da, Ha, Wa, Ca), w (G, nnz, T, bs, bs), offsets (n_out_blocks + 1,),
// entries (nnz, 2) -> out (G, Nb, Do, Ho, Wo, n_out_blocks * bs). The spatial sizes of a and out
// are otherwise free: every source position is bounds-checked by the kernels.
inline ffi::Error ValidateConv(const char* target, const ffi::AnyBuffer& a, const ffi::AnyBuffer& w,
                               const ffi::AnyBuffer& offsets, const ffi::AnyBuffer& entries,
                               const ffi::AnyBuffer& out, int32_t precision,
                               ffi::Span<const int64_t> kernel, ffi::Span<const int64_t> strides,
                               ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> pad_lo,
                               ConvProblem& problem) {
  using detail::Invalid;
  const auto operands = [&] {
    return Describe("a", a) + ", " + Describe("w", w) + ", " +
           Describe("offsets", offsets) + ", " +
           Describe("entries", entries) + ", " + Describe("out", out);
  };
  if (!detail::HasRanks({{&a, 6}, {&w, 5}, {&offsets, 1}, {&entries, 2}, {&out, 6}})) {
    return Invalid(target, "expected ranks a:6, w:5, offsets:1, entries:2, out:6", operands);
  }
  if (offsets.element_type() != ffi::DataType::S32 || entries.element_type() != ffi::DataType::S32) {
    return Invalid(target, "offsets and entries must be int32", operands);
  }
  if (a.element_type() != w.element_type() ||
      !IsSupportedTypePair(a.element_type(), out.element_type())) {
    return Invalid(target, detail::kTypeRule, operands);
  }
  if (ffi::Error error = CheckPrecision(target, precision); error.failure()) return error;
  if (ffi::Error error = ValidateConvGeometry(target, kernel, strides, dilation, pad_lo,
                                              problem.geometry);
      error.failure()) {
    return error;
  }

  const auto a_dims = a.dimensions();
  const auto w_dims = w.dimensions();
  const auto out_dims = out.dimensions();
  problem.groups = a_dims[0];
  problem.batch = a_dims[1];
  problem.a_channels = a_dims[5];
  for (int i = 0; i < 3; ++i) {
    problem.a_spatial[i] = a_dims[2 + i];
    problem.out_spatial[i] = out_dims[2 + i];
  }
  problem.out_blocks = offsets.dimensions()[0] - 1;
  problem.nnz = w_dims[1];
  problem.block_size = w_dims[3];
  problem.input = a.element_type();
  problem.output = out.element_type();
  const int64_t bs = problem.block_size;
  if (w_dims[4] != bs || !IsSupportedBlockSize(bs)) {
    return Invalid(target, std::string("w ") + detail::kBlockRule, operands);
  }
  if (w_dims[2] != problem.geometry.taps) {
    return Invalid(target, "w's third dimension must be the number of taps T = prod(kernel) = " +
                               std::to_string(problem.geometry.taps) + " (" +
                               detail::DescribeSpan("kernel", kernel) + ")",
                   operands);
  }
  if (w_dims[0] != problem.groups || out_dims[0] != problem.groups) {
    return Invalid(target, "the group dimension G must agree across a, w and out", operands);
  }
  if (out_dims[1] != problem.batch) {
    return Invalid(target, "a and out must have the same batch Nb", operands);
  }
  if (problem.a_channels % bs != 0) {
    return Invalid(target, "a's last dimension must be a multiple of bs", operands);
  }
  if (problem.out_blocks < 0 || out_dims[5] != problem.out_blocks * bs) {
    return Invalid(target, "out's last dimension must be (len(offsets) - 1) * bs", operands);
  }
  if (entries.dimensions()[0] != problem.nnz || entries.dimensions()[1] != 2) {
    return Invalid(target, "entries must have shape (nnz, 2) with nnz = w.shape[1]", operands);
  }
  return ffi::Error::Success();
}

// jbs_conv_dw: a = x (G, Nb, D, H, W, C), b = dy (G, Nb, Do, Ho, Wo, N), coords (nnz, 2)
// -> out (G, nnz, T, bs, bs).
inline ffi::Error ValidateConvDw(const char* target, const ffi::AnyBuffer& a,
                                 const ffi::AnyBuffer& b, const ffi::AnyBuffer& coords,
                                 const ffi::AnyBuffer& out, int32_t precision,
                                 ffi::Span<const int64_t> kernel, ffi::Span<const int64_t> strides,
                                 ffi::Span<const int64_t> dilation,
                                 ffi::Span<const int64_t> pad_lo, ConvDwProblem& problem) {
  using detail::Invalid;
  const auto operands = [&] {
    return Describe("a", a) + ", " + Describe("b", b) + ", " +
           Describe("coords", coords) + ", " + Describe("out", out);
  };
  if (!detail::HasRanks({{&a, 6}, {&b, 6}, {&coords, 2}, {&out, 5}})) {
    return Invalid(target, "expected ranks a:6, b:6, coords:2, out:5", operands);
  }
  if (coords.element_type() != ffi::DataType::S32) {
    return Invalid(target, "coords must be int32", operands);
  }
  if (a.element_type() != b.element_type() ||
      !IsSupportedTypePair(a.element_type(), out.element_type())) {
    return Invalid(target, detail::kTypeRule, operands);
  }
  if (ffi::Error error = CheckPrecision(target, precision); error.failure()) return error;
  if (ffi::Error error = ValidateConvGeometry(target, kernel, strides, dilation, pad_lo,
                                              problem.geometry);
      error.failure()) {
    return error;
  }

  const auto a_dims = a.dimensions();
  const auto b_dims = b.dimensions();
  const auto out_dims = out.dimensions();
  problem.groups = a_dims[0];
  problem.batch = a_dims[1];
  problem.x_channels = a_dims[5];
  problem.dy_channels = b_dims[5];
  for (int i = 0; i < 3; ++i) {
    problem.x_spatial[i] = a_dims[2 + i];
    problem.dy_spatial[i] = b_dims[2 + i];
  }
  problem.nnz = out_dims[1];
  problem.block_size = out_dims[3];
  problem.input = a.element_type();
  problem.output = out.element_type();
  const int64_t bs = problem.block_size;
  if (out_dims[4] != bs || !IsSupportedBlockSize(bs)) {
    return Invalid(target, std::string("out ") + detail::kBlockRule, operands);
  }
  if (out_dims[2] != problem.geometry.taps) {
    return Invalid(target, "out's third dimension must be the number of taps T = prod(kernel) = " +
                               std::to_string(problem.geometry.taps) + " (" +
                               detail::DescribeSpan("kernel", kernel) + ")",
                   operands);
  }
  if (b_dims[0] != problem.groups || out_dims[0] != problem.groups) {
    return Invalid(target, "the group dimension G must agree across a, b and out", operands);
  }
  if (b_dims[1] != problem.batch) {
    return Invalid(target, "a and b must have the same batch Nb", operands);
  }
  if (problem.x_channels % bs != 0 || problem.dy_channels % bs != 0) {
    return Invalid(target, "the last dimensions of a and b must be multiples of bs", operands);
  }
  if (coords.dimensions()[0] != problem.nnz || coords.dimensions()[1] != 2) {
    return Invalid(target, "coords must have shape (nnz, 2) with nnz = out.shape[1]", operands);
  }
  return ffi::Error::Success();
}

}  // namespace jbs::ffi_validation

#endif  // JAX_BLOCKSPARSE_XLA_FFI_COMMON_FFI_VALIDATION_H_
