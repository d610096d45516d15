// What the tensor-core jbs_bsmm kernels (bsmm_tensor_core_kernel.cuh, bsmm_union_panel_kernel.cuh)
// share: the mma flavours and the grid limits.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_TC_COMMON_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_TC_COMMON_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace jbs {
namespace bsmm_tc {

enum class MmaKind { kBf16, kF16, kTf32, k3xTf32 };

template <MmaKind kKind>
using ElemOf = std::conditional_t<kKind == MmaKind::kBf16, __nv_bfloat16,
                                  std::conditional_t<kKind == MmaKind::kF16, __half, float>>;

constexpr int64_t kMaxGridYZ = 65535;

constexpr int64_t kMaxGridX = 2147483647;

}  // namespace bsmm_tc
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_BSMM_TC_COMMON_CUH_
