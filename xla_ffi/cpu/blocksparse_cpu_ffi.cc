// Thin FFI layer: decode and validate operands per docs/ffi_contract.md, then dispatch on the
// (input, output) dtype pair to the templated kernels. All errors are InvalidArgument with the
// offending shapes/dtypes spelled out, because they surface verbatim in the Python traceback.
#include "xla_ffi/cpu/blocksparse_cpu_ffi.h"

#include <cstdint>
#include <string>
#include <type_traits>

#include "xla/ffi/api/ffi.h"
#include "xla_ffi/cpu/blocksparse_cpu_kernels.h"

namespace ffi = xla::ffi;

namespace {

using jbs::cpu::Bf16Bits;
using jbs::cpu::F16Bits;

std::string ShapeString(ffi::AnyBuffer::Dimensions dims) {
  std::string text = "(";
  for (size_t d = 0; d < dims.size(); ++d) {
    if (d > 0) text += ", ";
    text += std::to_string(dims[d]);
  }
  if (dims.size() == 1) text += ",";
  return text + ")";
}

std::string DtypeName(ffi::DataType dtype) {
  switch (dtype) {
    case ffi::DataType::F16:
      return "float16";
    case ffi::DataType::BF16:
      return "bfloat16";
    case ffi::DataType::F32:
      return "float32";
    case ffi::DataType::F64:
      return "float64";
    case ffi::DataType::S32:
      return "int32";
    case ffi::DataType::S64:
      return "int64";
    default:
      return "dtype#" + std::to_string(static_cast<int>(dtype));
  }
}

std::string Describe(const char* name, const ffi::AnyBuffer& buffer) {
  return std::string(name) + " " + ShapeString(buffer.dimensions()) + " " +
         DtypeName(buffer.element_type());
}

ffi::Error Invalid(const char* target, const std::string& message) {
  return ffi::Error::InvalidArgument(std::string(target) + ": " + message);
}

ffi::Error CheckRank(const char* target, const char* name, const ffi::AnyBuffer& buffer,
                     size_t rank) {
  if (buffer.dimensions().size() == rank) return ffi::Error::Success();
  return Invalid(target, std::string("expected ") + name + " of rank " + std::to_string(rank) +
                             ", got " + Describe(name, buffer));
}

ffi::Error CheckIndexTable(const char* target, const char* name, const ffi::AnyBuffer& table) {
  if (table.element_type() != ffi::DataType::S32) {
    return Invalid(target, std::string(name) + " must be int32, got " + Describe(name, table));
  }
  return ffi::Error::Success();
}

bool IsSupportedBlockSize(int64_t bs) {
  return bs == 8 || bs == 16 || bs == 32 || bs == 64 || bs == 128;
}

ffi::Error CheckPrecision(const char* target, int32_t precision) {
  if (precision == 0 || precision == 1) return ffi::Error::Success();
  return Invalid(target, "precision must be 0 (DEFAULT) or 1 (HIGHEST), got " +
                             std::to_string(precision));
}

// Calls fn(In*, Out*) with null pointers whose static types select the kernel instantiation.
// Only the pairs allowed by the contract are accepted.
template <typename Fn>
ffi::Error DispatchDtypes(const char* target, ffi::DataType in, ffi::DataType out, Fn&& fn) {
  using ffi::DataType;
  if (in == DataType::F32 && out == DataType::F32) {
    fn(static_cast<float*>(nullptr), static_cast<float*>(nullptr));
  } else if (in == DataType::F64 && out == DataType::F64) {
    fn(static_cast<double*>(nullptr), static_cast<double*>(nullptr));
  } else if (in == DataType::BF16 && out == DataType::BF16) {
    fn(static_cast<Bf16Bits*>(nullptr), static_cast<Bf16Bits*>(nullptr));
  } else if (in == DataType::BF16 && out == DataType::F32) {
    fn(static_cast<Bf16Bits*>(nullptr), static_cast<float*>(nullptr));
  } else if (in == DataType::F16 && out == DataType::F16) {
    fn(static_cast<F16Bits*>(nullptr), static_cast<F16Bits*>(nullptr));
  } else if (in == DataType::F16 && out == DataType::F32) {
    fn(static_cast<F16Bits*>(nullptr), static_cast<float*>(nullptr));
  } else {
    return Invalid(target, "unsupported dtype pair: inputs " + DtypeName(in) + ", output " +
                               DtypeName(out) +
                               " (inputs must be float32/bfloat16/float16/float64; the output "
                               "must match the inputs or be float32, and float64 only to "
                               "float64)");
  }
  return ffi::Error::Success();
}

#define JBS_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ffi::Error jbs_status_ = (expr);           \
    if (jbs_status_.failure()) return jbs_status_; \
  } while (0)

ffi::Error BsmmImpl(ffi::AnyBuffer a, ffi::AnyBuffer w, ffi::AnyBuffer offsets,
                    ffi::AnyBuffer entries, ffi::Result<ffi::AnyBuffer> out, bool transpose_w,
                    int32_t precision) {
  constexpr const char* kTarget = "jbs_bsmm";
  JBS_RETURN_IF_ERROR(CheckRank(kTarget, "a", a, 3));
  JBS_RETURN_IF_ERROR(CheckRank(kTarget, "w", w, 4));
  JBS_RETURN_IF_ERROR(CheckRank(kTarget, "offsets", offsets, 1));
  JBS_RETURN_IF_ERROR(CheckRank(kTarget, "entries", entries, 2));
  JBS_RETURN_IF_ERROR(CheckRank(kTarget, "out", *out, 3));
  JBS_RETURN_IF_ERROR(CheckIndexTable(kTarget, "offsets", offsets));
  JBS_RETURN_IF_ERROR(CheckIndexTable(kTarget, "entries", entries));
  JBS_RETURN_IF_ERROR(CheckPrecision(kTarget, precision));

  const std::string operands = Describe("a", a) + ", " + Describe("w", w) + ", " +
                               Describe("offsets", offsets) + ", " +
                               Describe("entries", entries) + ", " + Describe("out", *out);
  if (a.element_type() != w.element_type()) {
    return Invalid(kTarget, "a and w must have the same dtype; got " + operands);
  }

  const auto a_dims = a.dimensions();
  const auto w_dims = w.dimensions();
  const auto out_dims = out->dimensions();
  const int64_t bs = w_dims[2];
  if (w_dims[3] != bs || !IsSupportedBlockSize(bs)) {
    return Invalid(kTarget, "w blocks must be bs x bs with bs in {8, 16, 32, 64, 128}; got " +
                                operands);
  }
  const int64_t groups = a_dims[0];
  const int64_t rows = a_dims[1];
  const int64_t a_cols = a_dims[2];
  const int64_t nnz = w_dims[1];
  const int64_t n_out_blocks = offsets.dimensions()[0] - 1;
  if (w_dims[0] != groups || out_dims[0] != groups) {
    return Invalid(kTarget, "group dim G must agree across a, w and out; got " + operands);
  }
  if (out_dims[1] != rows) {
    return Invalid(kTarget, "out must have the same M (dim 1) as a; got " + operands);
  }
  if (a_cols % bs != 0) {
    return Invalid(kTarget, "a's last dim must be a multiple of bs=" + std::to_string(bs) +
                                "; got " + operands);
  }
  if (n_out_blocks < 0 || out_dims[2] != n_out_blocks * bs) {
    return Invalid(kTarget, "out's last dim must be (len(offsets) - 1) * bs; got " + operands);
  }
  if (entries.dimensions()[0] != nnz || entries.dimensions()[1] != 2) {
    return Invalid(kTarget, "entries must have shape (nnz, 2) with nnz = w.shape[1]; got " +
                                operands);
  }

  // CPU buffers are host memory, so the tables can be checked cheaply; this turns a bad table
  // into an error instead of an out-of-bounds read.
  const int32_t* offset_data = offsets.reinterpret_data<int32_t>();
  const int32_t* entry_data = entries.reinterpret_data<int32_t>();
  for (int64_t o = 0; o <= n_out_blocks; ++o) {
    const int64_t lower = o == 0 ? 0 : offset_data[o - 1];
    if (offset_data[o] < lower || offset_data[o] > nnz) {
      return Invalid(kTarget, "offsets must be non-decreasing within [0, nnz=" +
                                  std::to_string(nnz) + "]; offsets[" + std::to_string(o) +
                                  "] = " + std::to_string(offset_data[o]));
    }
  }
  const int64_t a_blocks = a_cols / bs;
  for (int64_t e = 0; e < nnz; ++e) {
    const int32_t a_block = entry_data[2 * e];
    const int32_t w_block = entry_data[2 * e + 1];
    if (a_block < 0 || a_block >= a_blocks || w_block < 0 || w_block >= nnz) {
      return Invalid(kTarget, "entries[" + std::to_string(e) + "] = (" + std::to_string(a_block) +
                                  ", " + std::to_string(w_block) +
                                  ") out of range: a has " + std::to_string(a_blocks) +
                                  " blocks of width " + std::to_string(bs) + ", w has " +
                                  std::to_string(nnz) + " blocks");
    }
  }

  const jbs::cpu::BsmmShape shape{groups, rows, a_cols, n_out_blocks, nnz, bs, transpose_w};
  // precision only selects TF32 on GPU; the CPU kernels always accumulate at full precision.
  return DispatchDtypes(kTarget, a.element_type(), out->element_type(),
                        [&](auto* in_tag, auto* out_tag) {
                          using In = std::remove_pointer_t<decltype(in_tag)>;
                          using Out = std::remove_pointer_t<decltype(out_tag)>;
                          jbs::cpu::BlockSparseMatmul<In, Out>(
                              static_cast<const In*>(a.untyped_data()),
                              static_cast<const In*>(w.untyped_data()), offset_data, entry_data,
                              static_cast<Out*>(out->untyped_data()), shape);
                        });
}

ffi::Error SampledImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::AnyBuffer coords,
                       ffi::Result<ffi::AnyBuffer> out, int32_t precision) {
  constexpr const char* kTarget = "jbs_sampled";
  JBS_RETURN_IF_ERROR(CheckRank(kTarget, "a", a, 3));
  JBS_RETURN_IF_ERROR(CheckRank(kTarget, "b", b, 3));
  JBS_RETURN_IF_ERROR(CheckRank(kTarget, "coords", coords, 2));
  JBS_RETURN_IF_ERROR(CheckRank(kTarget, "out", *out, 4));
  JBS_RETURN_IF_ERROR(CheckIndexTable(kTarget, "coords", coords));
  JBS_RETURN_IF_ERROR(CheckPrecision(kTarget, precision));

  const std::string operands = Describe("a", a) + ", " + Describe("b", b) + ", " +
                               Describe("coords", coords) + ", " + Describe("out", *out);
  if (a.element_type() != b.element_type()) {
    return Invalid(kTarget, "a and b must have the same dtype; got " + operands);
  }

  const auto a_dims = a.dimensions();
  const auto b_dims = b.dimensions();
  const auto out_dims = out->dimensions();
  const int64_t bs = out_dims[2];
  if (out_dims[3] != bs || !IsSupportedBlockSize(bs)) {
    return Invalid(kTarget, "out blocks must be bs x bs with bs in {8, 16, 32, 64, 128}; got " +
                                operands);
  }
  const int64_t groups = a_dims[0];
  const int64_t rows = a_dims[1];
  const int64_t a_cols = a_dims[2];
  const int64_t b_cols = b_dims[2];
  const int64_t nnz = out_dims[1];
  if (b_dims[0] != groups || out_dims[0] != groups) {
    return Invalid(kTarget, "group dim G must agree across a, b and out; got " + operands);
  }
  if (b_dims[1] != rows) {
    return Invalid(kTarget, "a and b must have the same M (dim 1); got " + operands);
  }
  if (a_cols % bs != 0 || b_cols % bs != 0) {
    return Invalid(kTarget, "the last dims of a and b must be multiples of bs=" +
                                std::to_string(bs) + "; got " + operands);
  }
  if (coords.dimensions()[0] != nnz || coords.dimensions()[1] != 2) {
    return Invalid(kTarget, "coords must have shape (nnz, 2) with nnz = out.shape[1]; got " +
                                operands);
  }

  const int32_t* coord_data = coords.reinterpret_data<int32_t>();
  const int64_t a_blocks = a_cols / bs;
  const int64_t b_blocks = b_cols / bs;
  for (int64_t k = 0; k < nnz; ++k) {
    const int32_t i = coord_data[2 * k];
    const int32_t j = coord_data[2 * k + 1];
    if (i < 0 || i >= a_blocks || j < 0 || j >= b_blocks) {
      return Invalid(kTarget, "coords[" + std::to_string(k) + "] = (" + std::to_string(i) + ", " +
                                  std::to_string(j) + ") out of range for a block grid of " +
                                  std::to_string(a_blocks) + " x " + std::to_string(b_blocks));
    }
  }

  const jbs::cpu::SampledShape shape{groups, rows, a_cols, b_cols, nnz, bs};
  return DispatchDtypes(kTarget, a.element_type(), out->element_type(),
                        [&](auto* in_tag, auto* out_tag) {
                          using In = std::remove_pointer_t<decltype(in_tag)>;
                          using Out = std::remove_pointer_t<decltype(out_tag)>;
                          jbs::cpu::SampledDenseDense<In, Out>(
                              static_cast<const In*>(a.untyped_data()),
                              static_cast<const In*>(b.untyped_data()), coord_data,
                              static_cast<Out*>(out->untyped_data()), shape);
                        });
}

#undef JBS_RETURN_IF_ERROR

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsBsmmCpu, BsmmImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // a
                                  .Arg<ffi::AnyBuffer>()  // w
                                  .Arg<ffi::AnyBuffer>()  // offsets
                                  .Arg<ffi::AnyBuffer>()  // entries
                                  .Ret<ffi::AnyBuffer>()  // out
                                  .Attr<bool>("transpose_w")
                                  .Attr<int32_t>("precision"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JbsSampledCpu, SampledImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // a
                                  .Arg<ffi::AnyBuffer>()  // b
                                  .Arg<ffi::AnyBuffer>()  // coords
                                  .Ret<ffi::AnyBuffer>()  // out
                                  .Attr<int32_t>("precision"));
