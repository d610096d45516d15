// Instantiates the tensor-core jbs_bsmm / jbs_conv kernels for MmaKind::kBf16.
#include "bsmm_tensor_core_kernel.cuh"

namespace jbs {
namespace bsmm_tc {

JBS_BSMM_TC_INSTANTIATE(MmaKind::kBf16)

}  // namespace bsmm_tc
}  // namespace jbs
