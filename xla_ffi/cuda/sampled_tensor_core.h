// Tensor-core path of jbs_sampled (out[g, k] = a[g, :, i_k*bs:+bs].T @ b[g, :, j_k*bs:+bs])
// for 16-bit inputs (bf16/f16 m16n8k16) and float32 (TF32 m16n8k8 for precision 0, 3xTF32
// for precision 1). float64 stays on the SIMT kernel.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_SAMPLED_TENSOR_CORE_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_SAMPLED_TENSOR_CORE_H_

#include <cuda_runtime_api.h>

#include "blocksparse_kernels.h"

namespace jbs {

// Instantiated (explicitly, in sampled_tensor_core.cu) for T in {__nv_bfloat16, __half} with
// O in {T, float}, and for T = O = float; kBs in {8, 16, 32, 64, 128}. Preconditions: a, b and
// out are 16-byte aligned (the SIMT kernel handles anything else), groups >= 1, nnz >= 1.
// Same launch contract as LaunchSampled: enqueue only, no sync, no allocation.
template <typename T, typename O, int kBs>
cudaError_t LaunchSampledTensorCore(const SampledArgs& args, cudaStream_t stream);

// sampled_short_tensor_core.cu: persistent warps for bs 32 and short reductions: rows <= 64 for
// T in {__nv_bfloat16, __half} with O in {T, float}, rows <= 32 for T = O = float (TF32, 3xTF32
// at precision 1). cudaErrorNotSupported, having launched nothing, for anything else.
template <typename T, typename O>
cudaError_t LaunchSampledShortTensorCore(const SampledArgs& args, cudaStream_t stream);

// sampled_wgmma_tma.cu (experiment `wgmma_tma_sampled`): pairs of blocks on TMA boxes and wgmma
// for bs 32 on sm_90a; T in {__nv_bfloat16, __half} with O in {T, float} (cudaErrorNotSupported
// for float), and cudaErrorNotSupported, having launched nothing, where WgmmaAvailable() does
// not hold or the shapes exceed a tensor map's limits.
template <typename T, typename O>
cudaError_t LaunchSampledWgmmaTma(const SampledArgs& args, cudaStream_t stream);

// sampled_dense_tile.cu: dense 128 x 128 tiles of a^T b,
// whose blocks in the layout are written out; T in {__nv_bfloat16, __half}, O in {T, float},
// kBs in {8, 16}. `coords` must be sorted row-major, as every Layout's is.
template <typename T, typename O, int kBs>
cudaError_t LaunchSampledDenseTiles(const SampledArgs& args, cudaStream_t stream);
// How many 128 x 128 tiles cover the (a_cols, b_cols) product.
int64_t SampledDenseTileCount(const SampledArgs& args);

}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_SAMPLED_TENSOR_CORE_H_
