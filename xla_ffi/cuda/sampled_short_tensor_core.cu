// jbs_sampled for short reductions (rows <= 32: the seed's minibatch), 16-bit inputs, bs 32.
//
// Why a kernel of its own: with 32 rows each output block is one load of two 2 KB slices, four
// k16 mma steps per 16 x 8 tile and a 2 KB store. The general kernel gives a CTA 8 blocks and
// exits after one load-multiply-store round (measured 0.7 TB/s of output at seed d = 1/4,
// benchmarks/NOTES.md); here every warp is persistent: it walks the blocks k = warp, warp + W,
// ... with a 3-stage cp.async ring of its own, so the loads of its next two blocks are in flight
// while it multiplies and stores the current one, and no CTA-wide barrier is ever needed.
//
// Determinism: one warp computes a whole block in a fixed order. No atomics.
#include "sampled_tensor_core.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "launch_util.h"
#include "tensor_core.cuh"

namespace jbs {
namespace {

constexpr int kBs = 32;
constexpr int kMaxRows = 32;
constexpr int kWarps = 4;
constexpr int kStages = 3;
// Row pitch in elements: 8 extra put the 8 rows one ldmatrix phase reads into distinct banks.
constexpr int kPitch = kBs + 8;
constexpr int kSlotBytes = kMaxRows * kPitch * 2;  // one operand's 32 x 32 slice
constexpr int kStageBytes = 2 * kSlotBytes;        // a then b
constexpr int kWarpBytes = kStages * kStageBytes;
constexpr int kSmemBytes = kWarps * kWarpBytes;   // 60 KB: 3 CTAs per SM
constexpr int kPacketsPerRow = kBs * 2 / 16;      // 16-byte copies per 64-byte row
constexpr int kPacketsPerLane = kMaxRows * kPacketsPerRow / 32;
constexpr int64_t kMaxGridY = 65535;

// kRowRuns (rows <= 32): warp w takes the contiguous blocks
// [nnz w / W, nnz (w + 1) / W) instead of every W-th one. The coordinates are row-major, so
// consecutive blocks mostly share their row i: a's slice is then copied and loaded into
// fragments once per run of equal i, not once per block. Nsight put this kernel at 74% of L2
// throughput with 99% hits (L2-bound, not DRAM-bound), and a's slices are a third of that
// traffic (b's slices a third, the output a third). Seed sampled: 74.5 -> 58.4 us at d = 1/4,
// 30.4 -> 24.6 at 1/16 (NOTES v7b).
//
// kChunks = 2 (33 to 64 rows): two 32-row chunks per block, each a ring stage of its own; the
// block's sums run on over both and are stored after the second. Seed64 sampled: 121 -> 113 us at
// d = 1/4, 54.4 -> 35.6 at 1/16 against the row-tiled kernel (NOTES v7e).
template <typename T, typename O, bool kRowRuns, int kChunks>
__global__ void __launch_bounds__(kWarps * 32)
    SampledShortKernel(SampledArgs args, int64_t warps_total) {
  static_assert(kChunks == 1 || !kRowRuns, "a run's fragments cover one chunk");
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const uint32_t ring = tc::SharedAddress(smem + warp * kWarpBytes);
  const T* __restrict__ a = static_cast<const T*>(args.a);
  const T* __restrict__ b = static_cast<const T*>(args.b);
  const int64_t rows = args.rows;
  const int64_t nnz = args.nnz;
  const int64_t warp_id = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  // Blocks of this warp: block(n) for n < count.
  const int64_t first = kRowRuns ? nnz * warp_id / warps_total : warp_id;
  const int64_t stride = kRowRuns ? 1 : warps_total;
  const int64_t count = kRowRuns ? nnz * (warp_id + 1) / warps_total - first
                                 : (first < nnz ? (nnz - first + warps_total - 1) / warps_total : 0);
  auto block = [&](int64_t n) { return first + n * stride; };
  // kRowRuns: whether block n starts a run of equal i (its a slice must be copied and loaded).
  auto starts_run = [&](int64_t n) {
    const int32_t* pair = args.coords + 2 * block(n);
    return !kRowRuns || n == 0 || __ldg(pair) != __ldg(pair - 2);
  };
  // A 16-row k-step is skipped where all its rows are past the end (they are zero-filled).
  auto ksteps_of = [&](int chunk) { return rows - kMaxRows * chunk > 16 ? 2 : 1; };
  const int ksteps = ksteps_of(0);
  // Ring items: block n's chunk c is item n * kChunks + c.
  const int64_t items = count * kChunks;

  for (int64_t g = blockIdx.y; g < args.groups; g += gridDim.y) {
    const T* a_g = a + g * rows * args.a_cols;
    const T* b_g = b + g * rows * args.b_cols;
    O* out_g = static_cast<O*>(args.out) + g * nnz * (kBs * kBs);

    // Copies item q's two slices into stage q % kStages (zeros for rows past the end and for
    // a corrupt coordinate, which then yields a zero block instead of an out-of-bounds read).
    auto issue = [&](int64_t q) {
      const int64_t n = q / kChunks;
      const int row0 = kMaxRows * static_cast<int>(q % kChunks);
      const int64_t k = block(n);
      const bool copy_a = starts_run(n);
      const int32_t i = __ldg(args.coords + 2 * k);
      const int32_t j = __ldg(args.coords + 2 * k + 1);
      // kRowRuns: each slice's validity is its own coordinate's, so that a run's a slice is
      // right for every block of the run whatever their j.
      const bool i_ok = i >= 0 && i < args.a_cols / kBs;
      const bool j_ok = j >= 0 && j < args.b_cols / kBs;
      const bool ok_a = kRowRuns ? i_ok : i_ok && j_ok;
      const bool ok_b = kRowRuns ? j_ok : i_ok && j_ok;
      const uint32_t stage = ring + static_cast<uint32_t>((q % kStages) * kStageBytes);
#pragma unroll
      for (int p = 0; p < kPacketsPerLane; ++p) {
        const int idx = lane + 32 * p;
        const int r = idx / kPacketsPerRow;
        const int unit = idx % kPacketsPerRow;
        const int64_t row = row0 + r;
        const bool live_a = ok_a && row < rows;
        const bool live_b = ok_b && row < rows;
        const uint32_t offset = static_cast<uint32_t>((r * kPitch + unit * 8) * 2);
        const T* a_src =
            live_a ? a_g + row * args.a_cols + static_cast<int64_t>(i) * kBs + unit * 8 : a;
        const T* b_src =
            live_b ? b_g + row * args.b_cols + static_cast<int64_t>(j) * kBs + unit * 8 : b;
        if (copy_a) tc::CpAsync16(stage + offset, a_src, live_a);
        tc::CpAsync16(stage + kSlotBytes + offset, b_src, live_b);
      }
    };

    // a's fragments of the current run (kRowRuns), for both k-steps.
    uint32_t af_run[kRowRuns ? 2 : 1][2][4];
#pragma unroll
    for (int q = 0; q < kStages - 1; ++q) {
      if (q < items) issue(q);
      tc::CpAsyncCommit();
    }
    float acc[2][4][4];
    for (int64_t q = 0; q < items; ++q) {
      tc::CpAsyncWait<kStages - 2>();
      // Every lane's copies of item q are visible, and every lane is past item q - 1, whose
      // stage the next issue refills.
      __syncwarp();
      if (q + kStages - 1 < items) issue(q + kStages - 1);
      tc::CpAsyncCommit();

      const int64_t n = q / kChunks;
      const int chunk = static_cast<int>(q % kChunks);
      const uint32_t a_tile = ring + static_cast<uint32_t>((q % kStages) * kStageBytes);
      const uint32_t b_tile = a_tile + kSlotBytes;
      if (chunk == 0) {
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[mi][ni][c] = 0.f;
      }
      // out = a_slice.T @ b_slice: the mma A operand is a's slice transposed and B is b's
      // slice, both stored reduction-major, so both fragments come from ldmatrix.trans.
      auto multiply_step = [&](int step, uint32_t (&af)[2][4], bool load_a) {
        const int kb = step * 16;
        uint32_t bf[4][2];
        if (load_a) {
#pragma unroll
          for (int mi = 0; mi < 2; ++mi) {
            const int r = kb + (lane & 7) + ((lane >> 4) << 3);
            const int c = mi * 16 + (((lane >> 3) & 1) << 3);
            tc::LdMatrixX4Trans(af[mi][0], af[mi][1], af[mi][2], af[mi][3],
                                a_tile + static_cast<uint32_t>((r * kPitch + c) * 2));
          }
        }
#pragma unroll
        for (int nj = 0; nj < 2; ++nj) {
          const int r = kb + (lane & 7) + (((lane >> 3) & 1) << 3);
          const int c = nj * 16 + ((lane >> 4) << 3);
          tc::LdMatrixX4Trans(bf[2 * nj][0], bf[2 * nj][1], bf[2 * nj + 1][0], bf[2 * nj + 1][1],
                              b_tile + static_cast<uint32_t>((r * kPitch + c) * 2));
        }
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) {
            tc::Mma16<T>(acc[mi][ni], af[mi], bf[ni]);
          }
      };
      if constexpr (kRowRuns) {
        // Unrolled, so that the run's fragments stay in registers.
        const bool load_a = starts_run(n);
#pragma unroll
        for (int step = 0; step < 2; ++step) {
          if (step < ksteps) multiply_step(step, af_run[step], load_a);
        }
      } else {
        const int chunk_steps = kChunks == 1 ? ksteps : ksteps_of(chunk);
        for (int step = 0; step < chunk_steps; ++step) {
          uint32_t af[2][4];
          multiply_step(step, af, /*load_a=*/true);
        }
      }

      if (chunk == kChunks - 1) tc::StoreWarpTile32(out_g + block(n) * (kBs * kBs), acc, lane);
    }
    tc::CpAsyncWait<0>();
    __syncwarp();  // the next group's first issues refill stages this warp may still read
  }
}

}  // namespace

template <typename T, typename O>
cudaError_t LaunchSampledShortTensorCore(const SampledArgs& args, cudaStream_t stream) {
  if (args.block_size != kBs || args.rows > 2 * kMaxRows || args.rows < 1) {
    return cudaErrorNotSupported;
  }
  const bool two_chunks = args.rows > kMaxRows;
  auto kernel = two_chunks ? SampledShortKernel<T, O, false, 2> : SampledShortKernel<T, O, true, 1>;
  static std::atomic<uint64_t> done_devices[2] = {0, 0};
  const cudaError_t err = OptInSharedMemory(reinterpret_cast<const void*>(kernel), kSmemBytes,
                                            done_devices[two_chunks]);
  if (err != cudaSuccess) return err;
  // Enough warps to fill every SM at 3 CTAs, but no more than there are blocks.
  const int64_t resident = static_cast<int64_t>(MultiprocessorCount()) * 3;
  const int64_t ctas = std::min<int64_t>((args.nnz + kWarps - 1) / kWarps, resident);
  const dim3 grid(static_cast<unsigned>(ctas),
                  static_cast<unsigned>(std::min<int64_t>(args.groups, kMaxGridY)));
  kernel<<<grid, kWarps * 32, kSmemBytes, stream>>>(args, ctas * kWarps);
  return cudaSuccess;
}

template cudaError_t LaunchSampledShortTensorCore<__nv_bfloat16, __nv_bfloat16>(
    const SampledArgs&, cudaStream_t);
template cudaError_t LaunchSampledShortTensorCore<__nv_bfloat16, float>(const SampledArgs&,
                                                                         cudaStream_t);
template cudaError_t LaunchSampledShortTensorCore<__half, __half>(const SampledArgs&,
                                                                  cudaStream_t);
template cudaError_t LaunchSampledShortTensorCore<__half, float>(const SampledArgs&,
                                                                 cudaStream_t);

}  // namespace jbs
