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

// Returns the ffi::Error that `expr` gives when it is a failure. A macro, as in absl's
// RETURN_IF_ERROR, because the return must leave the caller.
#define JBS_RETURN_IF_ERROR(expr)                                  \
  do {                                                             \
    if (::xla::ffi::Error jbs_error_ = (expr); jbs_error_.failure()) { \
      return jbs_error_;                                           \
    }                                                              \
  } while (0)

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

// The checks below are shared by the two families of targets: the products (jbs_bsmm, jbs_conv:
// a, w, offsets, entries -> out) and the sampled ones (jbs_sampled, jbs_conv_dw: a, b, coords ->
// out). Each runs at the same point of every validator of its family, so that a call breaking
// several rules reports the same rule on every target.
namespace detail {

inline std::string DescribeProductOperands(const ffi::AnyBuffer& a, const ffi::AnyBuffer& w,
                                           const ffi::AnyBuffer& offsets,
                                           const ffi::AnyBuffer& entries,
                                           const ffi::AnyBuffer& out) {
  return Describe("a", a) + ", " + Describe("w", w) + ", " + Describe("offsets", offsets) + ", " +
         Describe("entries", entries) + ", " + Describe("out", out);
}

inline std::string DescribeSampledOperands(const ffi::AnyBuffer& a, const ffi::AnyBuffer& b,
                                           const ffi::AnyBuffer& coords,
                                           const ffi::AnyBuffer& out) {
  return Describe("a", a) + ", " + Describe("b", b) + ", " + Describe("coords", coords) + ", " +
         Describe("out", out);
}

// `a` and `other` (w or b) are the two value inputs.
template <typename DescribeOperands>
inline ffi::Error CheckValueDtypes(const char* target, const ffi::AnyBuffer& a,
                                   const ffi::AnyBuffer& other, const ffi::AnyBuffer& out,
                                   int32_t precision, const DescribeOperands& operands) {
  if (a.element_type() != other.element_type() ||
      !IsSupportedTypePair(a.element_type(), out.element_type())) {
    return Invalid(target, kTypeRule, operands);
  }
  return CheckPrecision(target, precision);
}

template <typename DescribeOperands>
inline ffi::Error CheckProductDtypes(const char* target, const ffi::AnyBuffer& a,
                                     const ffi::AnyBuffer& w, const ffi::AnyBuffer& offsets,
                                     const ffi::AnyBuffer& entries, const ffi::AnyBuffer& out,
                                     int32_t precision, const DescribeOperands& operands) {
  if (offsets.element_type() != ffi::DataType::S32 || entries.element_type() != ffi::DataType::S32) {
    return Invalid(target, "offsets and entries must be int32", operands);
  }
  return CheckValueDtypes(target, a, w, out, precision, operands);
}

template <typename DescribeOperands>
inline ffi::Error CheckSampledDtypes(const char* target, const ffi::AnyBuffer& a,
                                     const ffi::AnyBuffer& b, const ffi::AnyBuffer& coords,
                                     const ffi::AnyBuffer& out, int32_t precision,
                                     const DescribeOperands& operands) {
  if (coords.element_type() != ffi::DataType::S32) {
    return Invalid(target, "coords must be int32", operands);
  }
  return CheckValueDtypes(target, a, b, out, precision, operands);
}

// The blocks of `blocks_operand` (w of a product, out of a sampled target) are its last two
// dimensions, block_rows x block_cols.
template <typename DescribeOperands>
inline ffi::Error CheckBlockSize(const char* target, const char* blocks_operand,
                                 int64_t block_rows, int64_t block_cols,
                                 const DescribeOperands& operands) {
  if (block_cols != block_rows || !IsSupportedBlockSize(block_rows)) {
    return Invalid(target, std::string(blocks_operand) + " " + kBlockRule, operands);
  }
  return ffi::Error::Success();
}

// `other` (w or b) is the operand that shares the group dimension G with a and out.
template <typename DescribeOperands>
inline ffi::Error CheckGroups(const char* target, const char* other, int64_t groups,
                              int64_t other_groups, int64_t out_groups,
                              const DescribeOperands& operands) {
  if (other_groups != groups || out_groups != groups) {
    return Invalid(target,
                   std::string("the group dimension G must agree across a, ") + other + " and out",
                   operands);
  }
  return ffi::Error::Success();
}

// a_cols: a's last dimension; out_cols: out's last dimension.
template <typename DescribeOperands>
inline ffi::Error CheckProductColumns(const char* target, int64_t a_cols, int64_t out_cols,
                                      int64_t out_blocks, int64_t nnz, int64_t bs,
                                      const ffi::AnyBuffer& entries,
                                      const DescribeOperands& operands) {
  if (a_cols % bs != 0) {
    return Invalid(target,
                   "a's reduction dimension (the last; the middle for jbs_bsmm_at) must be a "
                   "multiple of bs",
                   operands);
  }
  if (out_blocks < 0 || out_cols != out_blocks * bs) {
    return Invalid(target, "out's last dimension must be (len(offsets) - 1) * bs", operands);
  }
  if (entries.dimensions()[0] != nnz || entries.dimensions()[1] != 2) {
    return Invalid(target, "entries must have shape (nnz, 2) with nnz = w.shape[1]", operands);
  }
  return ffi::Error::Success();
}

// a_cols, b_cols: the last dimensions of a and b.
template <typename DescribeOperands>
inline ffi::Error CheckSampledColumns(const char* target, int64_t a_cols, int64_t b_cols,
                                      int64_t nnz, int64_t bs, const ffi::AnyBuffer& coords,
                                      const DescribeOperands& operands) {
  if (a_cols % bs != 0 || b_cols % bs != 0) {
    return Invalid(target, "the last dimensions of a and b must be multiples of bs", operands);
  }
  if (coords.dimensions()[0] != nnz || coords.dimensions()[1] != 2) {
    return Invalid(target, "coords must have shape (nnz, 2) with nnz = out.shape[1]", operands);
  }
  return ffi::Error::Success();
}

}  // namespace detail

// Fills `problem` when the call satisfies the contract. (Not ffi::ErrorOr: its converting
// constructors differ across the supported jaxlib versions.)
inline ffi::Error ValidateBsmm(const char* target, const ffi::AnyBuffer& a, const ffi::AnyBuffer& w,
                               const ffi::AnyBuffer& offsets, const ffi::AnyBuffer& entries,
                               const ffi::AnyBuffer& out, int32_t precision, BsmmProblem& problem,
                               bool a_transposed = false) {
  using detail::Invalid;
  const auto operands = [&] {
    return detail::DescribeProductOperands(a, w, offsets, entries, out);
  };
  if (!detail::HasRanks({{&a, 3}, {&w, 4}, {&offsets, 1}, {&entries, 2}, {&out, 3}})) {
    return Invalid(target, "expected ranks a:3, w:4, offsets:1, entries:2, out:3", operands);
  }
  JBS_RETURN_IF_ERROR(detail::CheckProductDtypes(target, a, w, offsets, entries, out, precision,
                                                 operands));

  const auto a_dims = a.dimensions();
  const auto w_dims = w.dimensions();
  const auto out_dims = out.dimensions();
  // jbs_bsmm_at takes a as (G, Ka, M): the dense operand stored transposed.
  const int64_t a_rows = a_dims[a_transposed ? 2 : 1];
  const int64_t a_cols = a_dims[a_transposed ? 1 : 2];
  problem = BsmmProblem{a_dims[0], a_rows, a_cols, offsets.dimensions()[0] - 1, w_dims[1],
                        w_dims[2], a.element_type(), out.element_type()};
  const int64_t bs = problem.block_size;
  JBS_RETURN_IF_ERROR(detail::CheckBlockSize(target, "w", bs, w_dims[3], operands));
  JBS_RETURN_IF_ERROR(detail::CheckGroups(target, "w", problem.groups, w_dims[0], out_dims[0],
                                          operands));
  if (out_dims[1] != problem.rows) return Invalid(target, "a and out must have the same M", operands);
  return detail::CheckProductColumns(target, problem.a_cols, out_dims[2], problem.out_blocks,
                                     problem.nnz, bs, entries, operands);
}

inline ffi::Error ValidateSampled(const char* target, const ffi::AnyBuffer& a,
                                  const ffi::AnyBuffer& b, const ffi::AnyBuffer& coords,
                                  const ffi::AnyBuffer& out, int32_t precision,
                                  SampledProblem& problem) {
  using detail::Invalid;
  const auto operands = [&] { return detail::DescribeSampledOperands(a, b, coords, out); };
  if (!detail::HasRanks({{&a, 3}, {&b, 3}, {&coords, 2}, {&out, 4}})) {
    return Invalid(target, "expected ranks a:3, b:3, coords:2, out:4", operands);
  }
  JBS_RETURN_IF_ERROR(detail::CheckSampledDtypes(target, a, b, coords, out, precision, operands));

  const auto a_dims = a.dimensions();
  const auto b_dims = b.dimensions();
  const auto out_dims = out.dimensions();
  problem = SampledProblem{a_dims[0], a_dims[1], a_dims[2], b_dims[2], out_dims[1], out_dims[2],
                           a.element_type(), out.element_type()};
  const int64_t bs = problem.block_size;
  JBS_RETURN_IF_ERROR(detail::CheckBlockSize(target, "out", bs, out_dims[3], operands));
  JBS_RETURN_IF_ERROR(detail::CheckGroups(target, "b", problem.groups, b_dims[0], out_dims[0],
                                          operands));
  if (b_dims[1] != problem.rows) return Invalid(target, "a and b must have the same M", operands);
  return detail::CheckSampledColumns(target, problem.a_cols, problem.b_cols, problem.nnz, bs,
                                     coords, operands);
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

// `filter` (w of jbs_conv, out of jbs_conv_dw) is laid out (G, nnz, T, bs, bs): the checks of
// its bs x bs blocks and of its taps T.
template <typename DescribeOperands>
inline ffi::Error CheckFilterShape(const char* target, const char* filter_name,
                                   ffi::Span<const int64_t> filter_dims, int64_t taps,
                                   ffi::Span<const int64_t> kernel,
                                   const DescribeOperands& operands) {
  JBS_RETURN_IF_ERROR(
      CheckBlockSize(target, filter_name, filter_dims[3], filter_dims[4], operands));
  if (filter_dims[2] != taps) {
    return Invalid(target, std::string(filter_name) +
                               "'s third dimension must be the number of taps T = prod(kernel) = " +
                               std::to_string(taps) + " (" + DescribeSpan("kernel", kernel) + ")",
                   operands);
  }
  return ffi::Error::Success();
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
    return detail::DescribeProductOperands(a, w, offsets, entries, out);
  };
  if (!detail::HasRanks({{&a, 6}, {&w, 5}, {&offsets, 1}, {&entries, 2}, {&out, 6}})) {
    return Invalid(target, "expected ranks a:6, w:5, offsets:1, entries:2, out:6", operands);
  }
  JBS_RETURN_IF_ERROR(detail::CheckProductDtypes(target, a, w, offsets, entries, out, precision,
                                                 operands));
  ConvGeometry geometry;
  JBS_RETURN_IF_ERROR(ValidateConvGeometry(target, kernel, strides, dilation, pad_lo, geometry));

  const auto a_dims = a.dimensions();
  const auto w_dims = w.dimensions();
  const auto out_dims = out.dimensions();
  problem = ConvProblem{a_dims[0], a_dims[1], {a_dims[2], a_dims[3], a_dims[4]}, a_dims[5],
                        {out_dims[2], out_dims[3], out_dims[4]}, offsets.dimensions()[0] - 1,
                        w_dims[1], w_dims[3], a.element_type(), out.element_type(), geometry};
  JBS_RETURN_IF_ERROR(detail::CheckFilterShape(target, "w", w_dims, geometry.taps, kernel,
                                               operands));
  JBS_RETURN_IF_ERROR(detail::CheckGroups(target, "w", problem.groups, w_dims[0], out_dims[0],
                                          operands));
  if (out_dims[1] != problem.batch) {
    return Invalid(target, "a and out must have the same batch Nb", operands);
  }
  return detail::CheckProductColumns(target, problem.a_channels, out_dims[5], problem.out_blocks,
                                     problem.nnz, problem.block_size, entries, operands);
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
  const auto operands = [&] { return detail::DescribeSampledOperands(a, b, coords, out); };
  if (!detail::HasRanks({{&a, 6}, {&b, 6}, {&coords, 2}, {&out, 5}})) {
    return Invalid(target, "expected ranks a:6, b:6, coords:2, out:5", operands);
  }
  JBS_RETURN_IF_ERROR(detail::CheckSampledDtypes(target, a, b, coords, out, precision, operands));
  ConvGeometry geometry;
  JBS_RETURN_IF_ERROR(ValidateConvGeometry(target, kernel, strides, dilation, pad_lo, geometry));

  const auto a_dims = a.dimensions();
  const auto b_dims = b.dimensions();
  const auto out_dims = out.dimensions();
  problem = ConvDwProblem{a_dims[0], a_dims[1], {a_dims[2], a_dims[3], a_dims[4]}, a_dims[5],
                          {b_dims[2], b_dims[3], b_dims[4]}, b_dims[5], out_dims[1], out_dims[3],
                          a.element_type(), out.element_type(), geometry};
  JBS_RETURN_IF_ERROR(detail::CheckFilterShape(target, "out", out_dims, geometry.taps, kernel,
                                               operands));
  JBS_RETURN_IF_ERROR(detail::CheckGroups(target, "b", problem.groups, b_dims[0], out_dims[0],
                                          operands));
  if (b_dims[1] != problem.batch) {
    return Invalid(target, "a and b must have the same batch Nb", operands);
  }
  return detail::CheckSampledColumns(target, problem.x_channels, problem.dy_channels, problem.nnz,
                                     problem.block_size, coords, operands);
}

}  // namespace jbs::ffi_validation

#endif  // JAX_BLOCKSPARSE_XLA_FFI_COMMON_FFI_VALIDATION_H_
