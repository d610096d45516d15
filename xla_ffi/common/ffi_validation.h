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

inline ffi::Error Invalid(const char* target, const std::string& what, const std::string& operands) {
  return ffi::Error::InvalidArgument(std::string(target) + ": " + what + "; got " + operands);
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
  const std::string operands = Describe("a", a) + ", " + Describe("w", w) + ", " +
                               Describe("offsets", offsets) + ", " +
                               Describe("entries", entries) + ", " + Describe("out", out);
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
  const std::string operands = Describe("a", a) + ", " + Describe("b", b) + ", " +
                               Describe("coords", coords) + ", " + Describe("out", out);
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

}  // namespace jbs::ffi_validation

#endif  // JAX_BLOCKSPARSE_XLA_FFI_COMMON_FFI_VALIDATION_H_
