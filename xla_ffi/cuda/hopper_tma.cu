// Host side of hopper_tma.cuh: the driver's tensor-map encoder, found once through the runtime
// (so the module does not link libcuda).
#include "hopper_tma.cuh"

#include <cudaTypedefs.h>

namespace jbs {
namespace tma {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 Encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encoder = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &function, 12000,
                                         cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(function);
  }();
  return encoder;
}

}  // namespace

bool EncodeSwizzled(CUtensorMap* map, bool bf16, int rank, const void* base,
                    const uint64_t* dims, const uint64_t* byte_strides, const uint32_t* box) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = Encoder();
  if (encode == nullptr || rank < 1 || rank > 5) return false;
  const uint32_t row_bytes = box[0] * 2;
  if (row_bytes != 32 && row_bytes != 64 && row_bytes != 128) return false;
  cuuint64_t global_dims[5];
  cuuint64_t global_strides[4];
  cuuint32_t box_dims[5];
  cuuint32_t element_strides[5];
  for (int d = 0; d < rank; ++d) {
    global_dims[d] = dims[d];
    box_dims[d] = box[d];
    element_strides[d] = 1;
    if (d + 1 < rank) global_strides[d] = byte_strides[d];
  }
  const CUresult status = encode(
      map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
      static_cast<cuuint32_t>(rank), const_cast<void*>(base), global_dims, global_strides,
      box_dims, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      row_bytes == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
      : row_bytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                        : CU_TENSOR_MAP_SWIZZLE_32B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return status == CUDA_SUCCESS;
}

}  // namespace tma
}  // namespace jbs
