// jbs_bsmm_at: the block-sparse product with its dense operand stored transposed (x^T, rows of
// M contiguous), on the TMA + wgmma tile of bsmm_wgmma_tma_kernel.cuh (experiment
// `wgmma_tma_at`, benchmarks/NOTES.md v26). A box row of x^T is 128 bytes of 64 rows of x, where
// the row-major x gives 32 (bs 16) or 64 (bs 32) bytes per row, and the tile's L2 traffic was
// measured bound by box rows, not bytes (v25). Only sm_90a, 16-bit, bs 16 and 32: the lowering
// routes nothing else here (`wgmma_available()`), and anything else is an error, since no other
// kernel reads x^T.
#include "bsmm_tensor_core.h"

#include "bsmm_wgmma_tma_kernel.cuh"
#include "launch_util.h"

namespace jbs {

namespace {

using bsmm_tc::MmaKind;

template <MmaKind kKind, int kBs>
cudaError_t LaunchForBlockSize(const BsmmArgs& args, bool out_f32, cudaStream_t stream) {
  return args.transpose_w
             ? bsmm_tc::LaunchWgmmaTmaRows<kKind, true, kBs, true>(args, out_f32, stream)
             : bsmm_tc::LaunchWgmmaTmaRows<kKind, false, kBs, true>(args, out_f32, stream);
}

template <MmaKind kKind>
cudaError_t LaunchForKind(const BsmmArgs& args, bool out_f32, cudaStream_t stream) {
  switch (args.block_size) {
    case 16: return LaunchForBlockSize<kKind, 16>(args, out_f32, stream);
    case 32: return LaunchForBlockSize<kKind, 32>(args, out_f32, stream);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace

cudaError_t LaunchBsmmTransposedA(ElementType input, ElementType output, const BsmmArgs& args,
                                  cudaStream_t stream) {
  if (!WgmmaAvailable() || !Aligned16(args.a) || !Aligned16(args.w) || !Aligned16(args.out) ||
      reinterpret_cast<uintptr_t>(args.entries) % 8 != 0) {
    return cudaErrorNotSupported;
  }
  const bool out_f32 = output == ElementType::kF32;
  if (!out_f32 && output != input) return cudaErrorNotSupported;
  switch (input) {
    case ElementType::kBF16: return LaunchForKind<MmaKind::kBf16>(args, out_f32, stream);
    case ElementType::kF16: return LaunchForKind<MmaKind::kF16>(args, out_f32, stream);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace jbs
