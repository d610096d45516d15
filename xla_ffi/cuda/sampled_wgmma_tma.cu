// jbs_sampled for long reductions on sm_90a: TMA boxes and wgmma (experiment
// `wgmma_tma_sampled`, benchmarks/NOTES.md v23), 16-bit inputs, bs 32.
//
// Why: the weight gradient out[k] = x[:, i_k block].T @ dy[:, j_k block] runs on mma.sync at
// wide d = 1/16 in 248 us, twice matmul's time on the TMA-fed wgmma tile (115 us). Here a CTA
// owns two consecutive blocks k1 = 2p, k2 = 2p + 1 of the layout (row-major, so they usually
// share their block-row i) and walks the reduction over M in 64-row steps. wgmma's M is 64, so
// the two blocks are stacked along it by computing the transposed products:
//   D = [dy_j1 | dy_j2].T @ X, D[n][c] = out[k][c][n],
// with A = the two dy boxes (each 64 rows x 32 columns, MN-major: the n index is contiguous) and
// B = x_i (MN-major as well). When the blocks share their block-row, X = x_i and the step is
// m64n32k16 on three boxes; otherwise X = [x_i1 | x_i2], m64n64k16 on four boxes, of which the
// off-diagonal quadrants are discarded.
//
// Roles as in the matmul's TMA kernel (bsmm_wgmma_tma_kernel.cuh): a producer lane fills a
// 4-stage ring (full / empty mbarriers), one consumer warpgroup multiplies. Rows past M read as
// zeros (the TMA's fill). A pair whose second block does not exist (odd nnz) computes it from a
// copy of the first and stores only the first.
//
// Determinism: every output element is summed by one thread in row order. No atomics.
#include "sampled_tensor_core.h"

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "bsmm_wgmma_common.cuh"
#include "hopper_tma.cuh"
#include "launch_util.h"
#include "tensor_core.cuh"
#include "wgmma.cuh"

namespace jbs {
namespace {

constexpr int kBs = 32;
constexpr int kConsumerThreads = 128;             // one warpgroup
constexpr int kThreads = kConsumerThreads + 32;   // and one producer warp
constexpr int kStepRows = 64;                     // rows of M per step: 4 k16
constexpr uint32_t kRowBytes = kBs * 2;           // 64: one swizzle row
constexpr uint32_t kAtomBytes = 8 * kRowBytes;  // 512
constexpr uint32_t kBoxBytes = kStepRows * kRowBytes;  // 4 KB
constexpr uint32_t kStageBytes = 4 * kBoxBytes;   // dy_j1, dy_j2, x_i1, x_i2
constexpr int kStages = 4;
constexpr uint32_t kAlign = 1024;
constexpr int kSmemBytes = kAlign + kStages * kStageBytes + 2 * kStages * 8;
constexpr int64_t kMaxGridZ = 65535;

// The pair's blocks: coordinates clamped into range (a corrupt pair is computed from block
// (0, 0) and stored as zeros), and whether the two share their block-row.
struct BlockPair {
  int64_t k1, k2;
  int32_t i1, j1, i2, j2;
  bool valid1, valid2, has_second, shared_row;
};

__device__ __forceinline__ BlockPair LoadPair(const SampledArgs& args, int64_t pair) {
  BlockPair p;
  p.k1 = 2 * pair;
  p.has_second = p.k1 + 1 < args.nnz;
  p.k2 = p.has_second ? p.k1 + 1 : p.k1;
  const int2* coords = reinterpret_cast<const int2*>(args.coords);
  const int2 c1 = __ldg(coords + p.k1);
  const int2 c2 = __ldg(coords + p.k2);
  const int64_t a_blocks = args.a_cols / kBs;
  const int64_t b_blocks = args.b_cols / kBs;
  p.valid1 = c1.x >= 0 && c1.x < a_blocks && c1.y >= 0 && c1.y < b_blocks;
  p.valid2 = c2.x >= 0 && c2.x < a_blocks && c2.y >= 0 && c2.y < b_blocks;
  p.i1 = p.valid1 ? c1.x : 0;
  p.j1 = p.valid1 ? c1.y : 0;
  p.i2 = p.valid2 ? c2.x : 0;
  p.j2 = p.valid2 ? c2.y : 0;
  p.shared_row = p.i1 == p.i2;
  return p;
}

template <typename Out>
__device__ __forceinline__ void StoreElement(void* out, int64_t index, float value) {
  if constexpr (std::is_same_v<Out, float>) {
    static_cast<float*>(out)[index] = value;
  } else if constexpr (std::is_same_v<Out, __nv_bfloat16>) {
    static_cast<__nv_bfloat16*>(out)[index] = __float2bfloat16_rn(value);
  } else {
    static_cast<__half*>(out)[index] = __float2half_rn(value);
  }
}

// One pair's reduction on the ring, from global step `base` on: kColumns = 32 (shared block-row:
// B is x_i) or 64 (B is [x_i1 | x_i2]). Leaves the accumulators retired.
template <typename Elem, int kColumns>
__device__ __forceinline__ void MultiplyPair(float (&acc)[kColumns / 2], uint32_t smem_base,
                                             uint32_t full_barriers, uint32_t empty_barriers,
                                             int64_t base, int64_t steps) {
#pragma unroll
  for (int i = 0; i < kColumns / 2; ++i) acc[i] = 0.0f;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t step = base + s;
    const int stage = static_cast<int>(step % kStages);
    tma::MbarrierWaitOrTrap(full_barriers + 8 * stage,
                            static_cast<uint32_t>((step / kStages) & 1));
    const uint32_t a_stage = smem_base + stage * kStageBytes;  // dy_j1, dy_j2
    const uint32_t b_stage = a_stage + 2 * kBoxBytes;          // x_i1 (, x_i2)
    wg::FenceAccumulators(acc);
    wg::WgmmaFence();
#pragma unroll
    for (int k16 = 0; k16 < kStepRows / 16; ++k16) {
      // MN-major, 64-byte swizzle: SBO steps 8 rows of the reduction (one atom), LBO the next
      // 32 columns (the next box); a k16 step is two atoms.
      const uint64_t a_descriptor =
          wg::DescriptorSwizzled64(a_stage + k16 * 2 * kAtomBytes, kBoxBytes, kAtomBytes);
      const uint64_t b_descriptor =
          wg::DescriptorSwizzled64(b_stage + k16 * 2 * kAtomBytes, kBoxBytes, kAtomBytes);
      if constexpr (kColumns == 32) {
        wg::Wgmma64x32x16<Elem, 1, 1>(acc, a_descriptor, b_descriptor);
      } else {
        wg::Wgmma64x64x16<Elem, 1, 1>(acc, a_descriptor, b_descriptor);
      }
    }
    wg::WgmmaCommit();
    wg::FenceAccumulators(acc);
    wg::WgmmaWait<1>();
    // Step s - 1's wgmma have retired: release its stage to the producer.
    if (s >= 1) tma::MbarrierArrive(empty_barriers + 8 * static_cast<int>((step - 1) % kStages));
  }
  wg::WgmmaWait<0>();
  wg::FenceAccumulators(acc);
  if (steps > 0) {
    // The last step's release, so that every consumed step is released exactly once.
    tma::MbarrierArrive(empty_barriers + 8 * static_cast<int>((base + steps - 1) % kStages));
  }
}

// D[n][c] (accumulator layout of wgmma.cuh: thread t of the warpgroup, warp w, lane l, float i
// at row 16 w + l / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (l % 4) + i % 2) to out[k][c][n]:
// rows 0-31 are block k1's n, 32-63 block k2's; with kColumns = 64, columns 0-31 belong to k1
// and 32-63 to k2 (the other quadrants are discarded).
template <typename Out, int kColumns>
__device__ __forceinline__ void StorePair(const SampledArgs& args,
                                          const float (&acc)[kColumns / 2], const BlockPair& p,
                                          int64_t g, int tid) {
  const int warp = tid / 32;
  const int lane = tid % 32;
#pragma unroll
  for (int i = 0; i < kColumns / 2; ++i) {
    const int row = 16 * warp + lane / 4 + 8 * ((i / 2) % 2);
    const int column = 8 * (i / 4) + 2 * (lane % 4) + i % 2;
    const bool second = row >= kBs;
    if (kColumns == 64 && second != (column >= kBs)) continue;  // an off-diagonal quadrant
    if (second && !p.has_second) continue;
    const int64_t k = second ? p.k2 : p.k1;
    const bool valid = second ? p.valid2 : p.valid1;
    const int64_t index = ((g * args.nnz + k) * kBs + column % kBs) * kBs + row % kBs;
    StoreElement<Out>(args.out, index, valid ? acc[i] : 0.0f);
  }
}

template <typename Elem, typename Out>
__global__ void __launch_bounds__(kThreads, 3)
    SampledWgmmaTmaKernel(SampledArgs args, const __grid_constant__ CUtensorMap x_map,
                          const __grid_constant__ CUtensorMap dy_map, int64_t pairs) {
  // Only the sm_90a image holds the kernel; the others (never launched: WgmmaAvailable) keep
  // a stub.
#if JBS_WGMMA_DEVICE
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw_base = tc::SharedAddress(smem_raw);
  const uint32_t smem_base = (raw_base + kAlign - 1) & ~(kAlign - 1);
  const uint32_t full_barriers = smem_base + kStages * kStageBytes;
  const uint32_t empty_barriers = full_barriers + kStages * 8;
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t steps = (args.rows + kStepRows - 1) / kStepRows;

  if (tid == 0) bsmm_tc::InitTmaRing(full_barriers, empty_barriers, kStages, kConsumerThreads);
  __syncthreads();  // the only CTA-wide barrier: the roles never meet again

  if (tid >= kConsumerThreads) {
    // Producer warp, one lane: every step of every (group, pair), in the consumers' order, up
    // to kStages ahead of them. Step j waits for the consumers' release of step j - kStages.
    if ((tid & 31) != 0) return;
    int64_t step = 0;
    for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
      for (int64_t pair = blockIdx.x; pair < pairs; pair += gridDim.x) {
        const BlockPair p = LoadPair(args, pair);
        const uint32_t bytes = (p.shared_row ? 3 : 4) * kBoxBytes;
        for (int64_t s = 0; s < steps; ++s, ++step) {
          const int stage = static_cast<int>(step % kStages);
          if (step >= kStages) {
            tma::MbarrierWaitOrTrap(empty_barriers + 8 * stage,
                                    static_cast<uint32_t>(((step - kStages) / kStages) & 1));
          }
          const uint32_t full = full_barriers + 8 * stage;
          const uint32_t dst = smem_base + stage * kStageBytes;
          const int32_t row = static_cast<int32_t>(s * kStepRows);
          const int32_t group = static_cast<int32_t>(g);
          tma::MbarrierArriveExpectTx(full, bytes);
          tma::Load3D(dst, &dy_map, full, p.j1 * kBs, row, group);
          tma::Load3D(dst + kBoxBytes, &dy_map, full, p.j2 * kBs, row, group);
          tma::Load3D(dst + 2 * kBoxBytes, &x_map, full, p.i1 * kBs, row, group);
          if (!p.shared_row) {
            tma::Load3D(dst + 3 * kBoxBytes, &x_map, full, p.i2 * kBs, row, group);
          }
        }
      }
    }
    return;
  }

  int64_t base = 0;  // global number of the current pair's first step
  for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
    for (int64_t pair = blockIdx.x; pair < pairs; pair += gridDim.x) {
      const BlockPair p = LoadPair(args, pair);  // the same for every thread
      if (p.shared_row) {
        float acc[16];
        MultiplyPair<Elem, 32>(acc, smem_base, full_barriers, empty_barriers, base, steps);
        StorePair<Out, 32>(args, acc, p, g, tid);
      } else {
        float acc[32];
        MultiplyPair<Elem, 64>(acc, smem_base, full_barriers, empty_barriers, base, steps);
        StorePair<Out, 64>(args, acc, p, g, tid);
      }
      base += steps;
    }
  }
#else
  __trap();
#endif
}

// x and dy as (groups, rows, cols), innermost first; a box is one block's 32 columns x 64 rows
// (rows past the end read as zeros), landing with the 64-byte swizzle.
bool EncodeOperandMap(CUtensorMap* map, bool bf16, const void* base, int64_t rows, int64_t cols,
                      int64_t groups) {
  if (cols > INT32_MAX || rows > INT32_MAX || groups > INT32_MAX) return false;
  const uint64_t dims[3] = {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows),
                            static_cast<uint64_t>(groups)};
  const uint64_t strides[2] = {static_cast<uint64_t>(cols) * 2,
                               static_cast<uint64_t>(rows * cols) * 2};
  const uint32_t box[3] = {kBs, kStepRows, 1};
  return tma::EncodeSwizzled(map, bf16, 3, base, dims, strides, box);
}

template <typename Elem, typename Out>
cudaError_t Launch(const SampledArgs& args, cudaStream_t stream) {
  constexpr bool kBf16 = std::is_same_v<Elem, __nv_bfloat16>;
  CUtensorMap x_map;
  CUtensorMap dy_map;
  if (!EncodeOperandMap(&x_map, kBf16, args.a, args.rows, args.a_cols, args.groups) ||
      !EncodeOperandMap(&dy_map, kBf16, args.b, args.rows, args.b_cols, args.groups)) {
    return cudaErrorNotSupported;
  }
  auto kernel = SampledWgmmaTmaKernel<Elem, Out>;
  static std::atomic<uint64_t> done_devices{0};
  if (OptInSharedMemory(reinterpret_cast<const void*>(kernel), kSmemBytes, done_devices) !=
      cudaSuccess) {
    return cudaErrorNotSupported;
  }
  const int64_t pairs = (args.nnz + 1) / 2;
  const dim3 grid(static_cast<unsigned>(pairs), 1,
                  static_cast<unsigned>(std::min(args.groups, kMaxGridZ)));
  kernel<<<grid, kThreads, kSmemBytes, stream>>>(args, x_map, dy_map, pairs);
  return cudaSuccess;
}

}  // namespace

template <typename T, typename O>
cudaError_t LaunchSampledWgmmaTma(const SampledArgs& args, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, float>) {
    return cudaErrorNotSupported;
  } else {
    if (args.block_size != kBs || args.nnz < 1 || args.rows < 1 || args.groups < 1 ||
        (args.nnz + 1) / 2 > INT32_MAX || !Aligned16(args.a) || !Aligned16(args.b) ||
        reinterpret_cast<uintptr_t>(args.coords) % 8 != 0 || !WgmmaAvailable()) {
      return cudaErrorNotSupported;
    }
    return Launch<T, O>(args, stream);
  }
}

#define JBS_SAMPLED_WGMMA_INSTANTIATE(T, O) \
  template cudaError_t LaunchSampledWgmmaTma<T, O>(const SampledArgs&, cudaStream_t);
JBS_SAMPLED_WGMMA_INSTANTIATE(__nv_bfloat16, __nv_bfloat16)
JBS_SAMPLED_WGMMA_INSTANTIATE(__nv_bfloat16, float)
JBS_SAMPLED_WGMMA_INSTANTIATE(__half, __half)
JBS_SAMPLED_WGMMA_INSTANTIATE(__half, float)
#undef JBS_SAMPLED_WGMMA_INSTANTIATE

}  // namespace jbs
