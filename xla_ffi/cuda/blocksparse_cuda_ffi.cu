// Thin XLA FFI handlers: decode and validate the call, then hand plain pointers and sizes to
// the launchers in blocksparse_kernels.cu. Nothing here synchronizes or allocates, so the
// handlers are safe inside CUDA graphs (command buffers).

#include "blocksparse_cuda_ffi.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "blocksparse_kernels.h"
#include "xla/ffi/api/ffi.h"
#include "xla_ffi/common/ffi_validation.h"

namespace ffi = xla::ffi;

namespace {

using jbs::ffi_validation::BsmmProblem;
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

ffi::Error BsmmImpl(cudaStream_t stream, ffi::AnyBuffer a, ffi::AnyBuffer w,
                    ffi::AnyBuffer offsets, ffi::AnyBuffer entries,
                    ffi::Result<ffi::AnyBuffer> out, bool transpose_w, int32_t precision) {
  constexpr const char* kTarget = "jbs_bsmm";
  BsmmProblem p;
  if (ffi::Error error = jbs::ffi_validation::ValidateBsmm(kTarget, a, w, offsets, entries, *out,
                                                           precision, p);
      error.failure()) {
    return error;
  }
  if (p.groups == 0 || p.rows == 0 || p.out_blocks == 0) return ffi::Error::Success();

  jbs::BsmmArgs args;
  args.a = a.untyped_data();
  args.w = w.untyped_data();
  args.offsets = static_cast<const int32_t*>(offsets.untyped_data());
  args.entries = static_cast<const int32_t*>(entries.untyped_data());
  args.out = out->untyped_data();
  args.groups = p.groups;
  args.rows = p.rows;
  args.a_cols = p.a_cols;
  args.nnz = p.nnz;
  args.out_blocks = p.out_blocks;
  args.block_size = static_cast<int32_t>(p.block_size);
  args.transpose_w = transpose_w;
  args.precision = precision;
  return LaunchStatus(kTarget, jbs::LaunchBsmm(ToElementType(p.input), ToElementType(p.output),
                                               args, stream));
}

ffi::Error SampledImpl(cudaStream_t stream, ffi::AnyBuffer a, ffi::AnyBuffer b,
                       ffi::AnyBuffer coords, ffi::Result<ffi::AnyBuffer> out,
                       int32_t precision) {
  constexpr const char* kTarget = "jbs_sampled";
  SampledProblem p;
  if (ffi::Error error = jbs::ffi_validation::ValidateSampled(kTarget, a, b, coords, *out,
                                                              precision, p);
      error.failure()) {
    return error;
  }
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
