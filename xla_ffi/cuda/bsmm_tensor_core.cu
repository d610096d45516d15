// Dispatch of the tensor-core jbs_bsmm / jbs_conv kernels (bsmm_tensor_core_kernel.cuh) by
// element type; stride-1 convolutions go to the halo-tile kernel where it applies.
#include "bsmm_tensor_core.h"

#include <cstdint>

#include "bsmm_tensor_core_kernel.cuh"
#include "conv_halo_tensor_core.h"
#include "conv_wgmma_tma.h"

namespace jbs {

namespace {

using bsmm_tc::LaunchKind;
using bsmm_tc::MmaKind;

template <bool kConv>
cudaError_t LaunchTensorCore(ElementType input, ElementType output, const BsmmArgs& args,
                             const ConvGather& conv, cudaStream_t stream) {
  if (!Aligned16(args.a) || !Aligned16(args.w) || !Aligned16(args.out) ||
      reinterpret_cast<uintptr_t>(args.entries) % 8 != 0) {
    return cudaErrorNotSupported;
  }
  const bool out_f32 = output == ElementType::kF32;
  switch (input) {
    case ElementType::kBF16: return LaunchKind<MmaKind::kBf16, kConv>(args, conv, out_f32, stream);
    case ElementType::kF16: return LaunchKind<MmaKind::kF16, kConv>(args, conv, out_f32, stream);
    case ElementType::kF32:
      if (!out_f32) return cudaErrorNotSupported;
      return args.precision == 0 ? LaunchKind<MmaKind::kTf32, kConv>(args, conv, true, stream)
                                 : LaunchKind<MmaKind::k3xTf32, kConv>(args, conv, true, stream);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace

cudaError_t LaunchBsmmTensorCore(ElementType input, ElementType output, const BsmmArgs& args,
                                 cudaStream_t stream) {
  return LaunchTensorCore<false>(input, output, args, ConvGather{}, stream);
}

cudaError_t LaunchConvTensorCore(ElementType input, ElementType output, const BsmmArgs& args,
                                 const ConvGather& conv, cudaStream_t stream) {
  // Stride-1, 16-bit, bs 32 on sm_90a: TMA boxes of shifted windows and wgmma (NOTES v21; H100,
  // batch 32, 32 x 32, 3 x 3, C = K = 1024, d = 1/8: forward 462 -> 295 us, 1.57x -> 2.47x of
  // cuDNN). `no_wgmma_tma_conv` keeps the halo kernels (their tests on a Hopper card).
  static const bool wgmma_tma_conv = !ExperimentEnabled("no_wgmma_tma_conv");
  if (wgmma_tma_conv) {
    const cudaError_t status = LaunchConvWgmmaTma(input, output, args, conv, stream);
    if (status != cudaErrorNotSupported) return status;
  }
  // Halo tiles: each input row is read once per input block instead of once per tap
  // (benchmarks/NOTES.md, v4). Strided, 32-bit and other block sizes take the gather kernel.
  const cudaError_t status = LaunchConvHaloTensorCore(input, output, args, conv, stream);
  if (status != cudaErrorNotSupported) return status;
  return LaunchTensorCore<true>(input, output, args, conv, stream);
}

}  // namespace jbs
