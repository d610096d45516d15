// jbs_sampled for short reductions, bs 32: 16-bit inputs up to 64 rows (32 is the seed's
// minibatch), float32 (TF32, or 3xTF32 at precision HIGHEST) up to 32 rows.
//
// Why a kernel of its own: with 32 rows each output block is one load of two 2 KB slices, four
// k16 mma steps per 16 x 8 tile and a 2 KB store. The general kernel gives a CTA 8 blocks and
// exits after one load-multiply-store round (measured 0.7 TB/s of output at seed d = 1/4,
// benchmarks/NOTES.md); here every warp is persistent: it walks the blocks k = warp, warp + W,
// ... with a 3-stage cp.async ring of its own, so the loads of its next two blocks are in flight
// while it multiplies and stores the current one, and no CTA-wide barrier is ever needed.
//
// float32 (the general kernel took 219 us at seed M = 32, d = 1/4; this one 81 us, NOTES v9b;
// bf16 here: 41.5 us): a row of a 32-float slice is twice as wide, so a ring
// chunk holds 16 rows instead of 32. That keeps a slot at 2560 bytes and the ring at 60 KB, hence
// 3 CTAs per SM as for 16-bit data, and a chunk is still two mma k-steps (tf32 k8 instead of
// k16). 32 rows then take two chunks, and a row run keeps a's fragments of both in registers.
// There is no 32-bit ldmatrix.trans: tf32 fragments come from scalar shared loads, which the
// 40-float pitch keeps free of bank conflicts.
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
constexpr int kWarps = 4;
constexpr int kStages = 3;
// Row pitch in elements: 8 extra put the 8 rows one ldmatrix phase reads (16-bit), or the 4 rows
// of a tf32 fragment load (float32), into distinct banks.
constexpr int kPitch = kBs + 8;
// One operand's slice of one chunk, the same bytes for every element type: see the top comment.
constexpr int kSlotBytes = 32 * kPitch * 2;
constexpr int kStageBytes = 2 * kSlotBytes;       // a then b
constexpr int kWarpBytes = kStages * kStageBytes;
constexpr int kSmemBytes = kWarps * kWarpBytes;  // 60 KB: 3 CTAs per SM
constexpr int64_t kMaxGridY = 65535;

// What the element type fixes: the rows of a chunk and the shapes of its copies and mma steps.
template <typename T>
struct ChunkShape {
  static constexpr int kElem = static_cast<int>(sizeof(T));
  static constexpr bool kTf32 = std::is_same_v<T, float>;
  static constexpr int kRows = kSlotBytes / (kPitch * kElem);  // 32 (16-bit) or 16 (float32)
  static constexpr int kStepRows = kTf32 ? 8 : 16;             // k of one mma
  static constexpr int kSteps = kRows / kStepRows;
  static constexpr int kPacketElems = 16 / kElem;              // per 16-byte copy
  static constexpr int kPacketsPerRow = kBs / kPacketElems;
  static constexpr int kPacketsPerLane = kRows * kPacketsPerRow / 32;
  static_assert(kRows * kPitch * kElem == kSlotBytes && kRows * kPacketsPerRow % 32 == 0);
  static_assert(kSteps == 2, "ksteps_of counts one or two steps");
};

// kRowRuns (16-bit up to 32 rows, float32 always): warp w takes the contiguous blocks
// [nnz w / W, nnz (w + 1) / W) instead of every W-th one. The coordinates are row-major, so
// consecutive blocks mostly share their row i: a's slice is then copied and loaded into
// fragments once per run of equal i, not once per block. Nsight put this kernel at 74% of L2
// throughput with 99% hits (L2-bound, not DRAM-bound), and a's slices are a third of that
// traffic (b's slices a third, the output a third). Seed sampled: 74.5 -> 58.4 us at d = 1/4,
// 30.4 -> 24.6 at 1/16 (NOTES v7b).
//
// kChunks = 2 (16-bit: 33 to 64 rows; float32: 17 to 32): two chunks per block, each a ring
// stage of its own; the block's sums run on over both and are stored after the second.
// Seed64 sampled (16-bit, without row runs): 121 -> 113 us at d = 1/4, 54.4 -> 35.6 at 1/16
// against the row-tiled kernel (NOTES v7e).
//
// kSplit (float32 only): 3xTF32, each operand split once per load into a big and a small tf32
// part; otherwise plain TF32.
//
// Minimum CTAs per SM: float32 declares the 3 that the ring allows, without which ptxas kept the
// TF32 one-chunk kernel at 72 registers by spilling a 64-bit value across its 64-bit division
// call. 0 states none (no .minnctapersm), which keeps the 16-bit kernels as they were measured:
// even a stated 1 changes their register allocation.
//
// kStaged (experiment `sampled_short_staged_store`, 16-bit outputs): each block leaves through
// the a slot of the stage it was computed from, as 16-byte stores (tc::StoreWarpTile32Staged).
template <typename T, typename O, bool kRowRuns, int kChunks, bool kSplit, bool kStaged = false,
          tc::Tf32Split kSplitKind = tc::Tf32Split::kCvt>
__global__ void __launch_bounds__(kWarps * 32, ChunkShape<T>::kTf32 ? 3 : 0)
    SampledShortKernel(SampledArgs args, int64_t warps_total) {
  using Shape = ChunkShape<T>;
  static_assert(kChunks == 1 || kChunks == 2, "a run's fragments are picked per chunk below");
  static_assert(Shape::kTf32 || !kSplit, "3xTF32 is for float32 inputs");
  // Registers per fragment value: the tf32 (or 16-bit pair) value, or 3xTF32's big then small.
  constexpr int kParts = kSplit ? 2 : 1;
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const uint32_t ring = tc::SharedAddress(smem + warp * kWarpBytes);
  const unsigned char* ring_bytes = smem + warp * kWarpBytes;  // the same, for scalar loads
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
  // A k-step is skipped where all its rows are past the end (they are zero-filled).
  auto ksteps_of = [&](int chunk) {
    return rows - Shape::kRows * chunk > Shape::kStepRows ? 2 : 1;
  };
  const int ksteps = ksteps_of(0);
  const int ksteps_last = ksteps_of(kChunks - 1);
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
      const int row0 = Shape::kRows * static_cast<int>(q % kChunks);
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
      for (int p = 0; p < Shape::kPacketsPerLane; ++p) {
        const int idx = lane + 32 * p;
        const int r = idx / Shape::kPacketsPerRow;
        const int unit = idx % Shape::kPacketsPerRow;
        const int64_t row = row0 + r;
        const bool live_a = ok_a && row < rows;
        const bool live_b = ok_b && row < rows;
        const int col = unit * Shape::kPacketElems;
        const uint32_t offset = static_cast<uint32_t>((r * kPitch + col) * Shape::kElem);
        const T* a_src =
            live_a ? a_g + row * args.a_cols + static_cast<int64_t>(i) * kBs + col : a;
        const T* b_src =
            live_b ? b_g + row * args.b_cols + static_cast<int64_t>(j) * kBs + col : b;
        if (copy_a) tc::CpAsync16(stage + offset, a_src, live_a);
        tc::CpAsync16(stage + kSlotBytes + offset, b_src, live_b);
      }
    };

    // a's fragments of the current run (kRowRuns), for every chunk and k-step.
    uint32_t af_run[kRowRuns ? kChunks : 1][Shape::kSteps][kParts][2][4];
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
      const int stage_offset = static_cast<int>(q % kStages) * kStageBytes;
      const uint32_t a_tile = ring + static_cast<uint32_t>(stage_offset);
      const uint32_t b_tile = a_tile + kSlotBytes;
      const float* a_slice = reinterpret_cast<const float*>(ring_bytes + stage_offset);
      const float* b_slice = reinterpret_cast<const float*>(ring_bytes + stage_offset + kSlotBytes);
      if (chunk == 0) {
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[mi][ni][c] = 0.f;
      }
      // out = a_slice.T @ b_slice: the mma A operand is a's slice transposed and B is b's
      // slice, both stored reduction-major.
      auto multiply_step = [&](int step, uint32_t (&af)[kParts][2][4], bool load_a) {
        const int kb = step * Shape::kStepRows;
        if constexpr (Shape::kTf32) {
          // m16n8k8 fragments (tensor_core.cuh), g = lane / 4, t = lane % 4:
          // A[m][k] = a_slice[k][m]: a0 = A[g][t], a1 = A[g + 8][t], a2 = A[g][t + 4],
          // a3 = A[g + 8][t + 4]; B[k][n] = b_slice[k][n]: b0 = B[t][g], b1 = B[t + 4][g].
          const int g8 = lane >> 2;
          const int t4 = lane & 3;
          auto to_operand = [](float x, uint32_t (&parts)[kParts]) {
            if constexpr (kSplit) {
              tc::SplitTf32As<kSplitKind>(x, parts[0], parts[1]);
            } else {
              parts[0] = tc::ToTf32(x);
            }
          };
          const float* a_row = a_slice + (kb + t4) * kPitch + g8;  // row k = kb + t, column g
          const float* b_row = b_slice + (kb + t4) * kPitch + g8;
          if (load_a) {
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
              const float v[4] = {a_row[mi * 16], a_row[mi * 16 + 8], a_row[4 * kPitch + mi * 16],
                                  a_row[4 * kPitch + mi * 16 + 8]};
#pragma unroll
              for (int c = 0; c < 4; ++c) {
                uint32_t parts[kParts];
                to_operand(v[c], parts);
#pragma unroll
                for (int part = 0; part < kParts; ++part) af[part][mi][c] = parts[part];
              }
            }
          }
          uint32_t bf[kParts][4][2];
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) {
            const float v[2] = {b_row[ni * 8], b_row[4 * kPitch + ni * 8]};
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              uint32_t parts[kParts];
              to_operand(v[c], parts);
#pragma unroll
              for (int part = 0; part < kParts; ++part) bf[part][ni][c] = parts[part];
            }
          }
#pragma unroll
          for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
              if constexpr (kSplit) {
                // Small cross terms first, so they are not lost under the big product (the
                // bsmm kernel's order).
                tc::MmaTf32(acc[mi][ni], af[1][mi], bf[0][ni]);
                tc::MmaTf32(acc[mi][ni], af[0][mi], bf[1][ni]);
              }
              tc::MmaTf32(acc[mi][ni], af[0][mi], bf[0][ni]);
            }
        } else {
          // Both fragments come from ldmatrix.trans.
          uint32_t bf[4][2];
          if (load_a) {
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
              const int r = kb + (lane & 7) + ((lane >> 4) << 3);
              const int c = mi * 16 + (((lane >> 3) & 1) << 3);
              tc::LdMatrixX4Trans(af[0][mi][0], af[0][mi][1], af[0][mi][2], af[0][mi][3],
                                  a_tile + static_cast<uint32_t>((r * kPitch + c) * 2));
            }
          }
#pragma unroll
          for (int nj = 0; nj < 2; ++nj) {
            const int r = kb + (lane & 7) + (((lane >> 3) & 1) << 3);
            const int c = nj * 16 + ((lane >> 4) << 3);
            tc::LdMatrixX4Trans(bf[2 * nj][0], bf[2 * nj][1], bf[2 * nj + 1][0],
                                bf[2 * nj + 1][1],
                                b_tile + static_cast<uint32_t>((r * kPitch + c) * 2));
          }
#pragma unroll
          for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
              tc::Mma16<T>(acc[mi][ni], af[0][mi], bf[ni]);
            }
        }
      };
      if constexpr (kRowRuns) {
        const bool load_a = starts_run(n);
        // Unrolled, and the chunk's fragments named by a compile-time index, so that the run's
        // fragments stay in registers (a runtime index would put them in local memory).
        auto multiply_chunk = [&](uint32_t (&af_chunk)[Shape::kSteps][kParts][2][4],
                                  int chunk_steps) {
#pragma unroll
          for (int step = 0; step < Shape::kSteps; ++step) {
            if (step < chunk_steps) multiply_step(step, af_chunk[step], load_a);
          }
        };
        if (kChunks == 1 || chunk == 0) {
          multiply_chunk(af_run[0], ksteps);
        } else {
          multiply_chunk(af_run[kChunks - 1], ksteps_last);
        }
      } else {
        const int chunk_steps = kChunks == 1 ? ksteps : ksteps_of(chunk);
        for (int step = 0; step < chunk_steps; ++step) {
          uint32_t af[kParts][2][4];
          multiply_step(step, af, /*load_a=*/true);
        }
      }

      if (chunk == kChunks - 1) {
        if constexpr (kStaged) {
          // Item q's stage is read for the last time above and refilled only after the next
          // iteration's __syncwarp; with row runs its a slot is not read again either (the
          // run's fragments are in registers).
          tc::StoreWarpTile32Staged(out_g + block(n) * (kBs * kBs), acc, lane,
                                    smem + warp * kWarpBytes + stage_offset);
        } else {
          tc::StoreWarpTile32(out_g + block(n) * (kBs * kBs), acc, lane);
        }
      }
    }
    tc::CpAsyncWait<0>();
    __syncwarp();  // the next group's first issues refill stages this warp may still read
  }
}

}  // namespace

template <typename T, typename O>
cudaError_t LaunchSampledShortTensorCore(const SampledArgs& args, cudaStream_t stream) {
  using Shape = ChunkShape<T>;
  // float32 over 32 rows stays with the general kernel for now: a run's fragments of four chunks
  // (128 registers at 3xTF32) would not fit.
  if (args.block_size != kBs || args.rows > 2 * Shape::kRows || args.rows < 1) {
    return cudaErrorNotSupported;
  }
  const bool two_chunks = args.rows > Shape::kRows;
  const bool split = Shape::kTf32 && args.precision == 1;
  void (*kernel)(SampledArgs, int64_t);
  if constexpr (Shape::kTf32) {
    // Row runs over both chunks: a float32 chunk is only 16 rows.
    if (split) {
      kernel = two_chunks ? SampledShortKernel<T, O, true, 2, true>
                          : SampledShortKernel<T, O, true, 1, true>;
      // Experiments tf32_split_rounded / tf32_split_truncated (NOTES v31), as for the products.
      static const bool truncated = ExperimentEnabled("tf32_split_truncated");
      static const bool rounded = ExperimentEnabled("tf32_split_rounded");
      if (truncated) {
        kernel = two_chunks
                     ? SampledShortKernel<T, O, true, 2, true, false, tc::Tf32Split::kTruncatedBig>
                     : SampledShortKernel<T, O, true, 1, true, false, tc::Tf32Split::kTruncatedBig>;
      } else if (rounded) {
        kernel = two_chunks
                     ? SampledShortKernel<T, O, true, 2, true, false, tc::Tf32Split::kRoundedSmall>
                     : SampledShortKernel<T, O, true, 1, true, false, tc::Tf32Split::kRoundedSmall>;
      }
    } else {
      kernel = two_chunks ? SampledShortKernel<T, O, true, 2, false>
                          : SampledShortKernel<T, O, true, 1, false>;
    }
  } else {
    // Experiment `sampled_short64_row_runs` (NOTES, session 13): row runs over both 32-row
    // chunks, as float32 has them over its 16-row ones; seed64 d = 1/4 runs at 56% of matmul's
    // speedup without them.
    static const bool row_runs_64 = ExperimentEnabled("sampled_short64_row_runs");
    kernel = !two_chunks   ? SampledShortKernel<T, O, true, 1, false>
             : row_runs_64 ? SampledShortKernel<T, O, true, 2, false>
                           : SampledShortKernel<T, O, false, 2, false>;
    if constexpr (sizeof(O) == 2) {
      // Experiment `sampled_short_staged_store` (NOTES v29): whole-sector output stores.
      static const bool staged_store = ExperimentEnabled("sampled_short_staged_store");
      if (staged_store) {
        kernel = !two_chunks   ? SampledShortKernel<T, O, true, 1, false, true>
                 : row_runs_64 ? SampledShortKernel<T, O, true, 2, false, true>
                               : SampledShortKernel<T, O, false, 2, false, true>;
      }
    }
  }
  // One slot per kernel this launcher may pick (the experiments' variants share their default's
  // slot: a process runs one of them, fixed by its environment).
  static std::atomic<uint64_t> done_devices[4] = {0, 0, 0, 0};
  const cudaError_t err = OptInSharedMemory(reinterpret_cast<const void*>(kernel), kSmemBytes,
                                            done_devices[2 * split + two_chunks]);
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
template cudaError_t LaunchSampledShortTensorCore<float, float>(const SampledArgs&, cudaStream_t);

}  // namespace jbs
