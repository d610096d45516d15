// Tensor-core kernel for jbs_sampled: out[g, k] = a[g, :, i_k*bs:+bs].T @ b[g, :, j_k*bs:+bs].
//
// Shape of the work: every output block is a bs x bs product reduced over all M rows, and the
// blocks share nothing except that consecutive k (coords are np.argwhere order) usually share
// the block-row i. A CTA therefore owns kP consecutive blocks; its 8 warps are split as
// kP blocks x kTilesPerBlock warp tiles x kS slices of the M rows. Each stage of the cp.async
// ring holds, per block slot, kChunk rows of the a and b block columns exactly as they sit in
// memory (row = reduction index). Slots whose i equals the previous slot's reuse that slot's
// a rows, which removes most of a's L2 traffic.
//
// The mma "A" operand is a's block column transposed and "B" is b's block column, both stored
// reduction-major, so for 16-bit data both fragments come from ldmatrix.trans. For tf32 there
// is no 32-bit transpose: fragments are read with scalar shared loads from a padded layout.
//
// Determinism: each warp reduces its rows in a fixed order; the kS slice partials are summed
// in slice order by the epilogue. No atomics.
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

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
// Stages are small (one or two k-steps per warp), so the ring is deep enough to keep ~60 KB
// per CTA in flight, which L2 latency needs in the bandwidth-bound regimes.
constexpr int kStages = 4;
constexpr int kStageTargetBytes = 20 * 1024;
constexpr int64_t kMaxGridY = 65535;

enum class Math { kHalf, kTf32, kTf32x3 };

constexpr int ChooseChunk(int base, int row_bytes) {
  int chunk = base;
  while (chunk * 2 <= 128 && chunk * 2 * row_bytes <= kStageTargetBytes) chunk *= 2;
  return chunk;
}

// kSlices: how many warps split the M rows of one block (1 = each warp reduces all of M).
template <typename T, int kBs, int kSlices>
struct TcTiling {
  static constexpr int kElem = static_cast<int>(sizeof(T));
  static constexpr int kK = kElem == 4 ? 8 : 16;  // rows per mma
  // Warp tile: kTM output rows (a columns) x kTN output columns (b columns). bs = 8 runs a
  // 16-row mma and discards half: those products are cheap next to the loads they come with.
  static constexpr int kTM = kBs <= 16 ? 16 : kBs == 32 ? 32 : 64;
  static constexpr int kTN = kBs == 8 ? 8 : kBs == 16 ? 16 : 32;
  static constexpr int kMTiles = kTM / 16;
  static constexpr int kNTiles = kTN / 8;
  static constexpr int kTilesAlongN = kBs / kTN;
  static constexpr int kTilesPerBlock = (kBs < kTM ? 1 : kBs / kTM) * kTilesAlongN;
  static constexpr int kWarpsPerTileSet = kWarps / kTilesPerBlock;
  static constexpr int kS = kSlices;
  static constexpr int kP = kWarpsPerTileSet / kS;
  // Row pitch in elements. 8 extra elements put the 8 rows an ldmatrix phase (or the 4 rows of
  // a tf32 fragment load) touches into distinct banks; a 16-byte bs=8 row already does.
  static constexpr int kPitch = kBs == 8 ? 8 : kBs + 8;
  static constexpr int kChunk = ChooseChunk(kK * kS, kP * 2 * kPitch * kElem);
  static constexpr int kRowsPerSlice = kChunk / kS;
  static constexpr int kStepsPerSlice = kRowsPerSlice / kK;
  static constexpr int kSlotBytes = 2 * kChunk * kPitch * kElem;  // a rows then b rows
  static constexpr int kStageBytes = kP * kSlotBytes;
  static constexpr int kPacketsPerRow = kBs * kElem / 16;
  static constexpr int kStagePackets = kP * 2 * kChunk * kPacketsPerRow;
  // fp32 partial tiles for the epilogue; same padding argument as kPitch for float2 stores.
  static constexpr int kRedStride = kPitch;
  static constexpr int kRedBlockFloats = kBs * kRedStride;
  static constexpr int kRedBytes = kP * kS * kRedBlockFloats * 4;
  // Short reductions are latency-bound and want several CTAs per SM; cap the registers so
  // that two or three fit where the warp tile leaves room (ptxas -v: no spills).
  static constexpr int kMinBlocks = kElem == 2 ? (kMTiles * kNTiles <= 2 ? 3 : kMTiles * kNTiles <= 8 ? 2 : 1)
                                   : (kMTiles * kNTiles <= 2 ? 2 : 1);
  static constexpr int kMaxSmemBytes =
      kStages * kStageBytes > kRedBytes ? kStages * kStageBytes : kRedBytes;
  static_assert(kWarps % kTilesPerBlock == 0 && kWarpsPerTileSet % kS == 0 && kP >= 1);
  static_assert(kRowsPerSlice % kK == 0 && kStepsPerSlice >= 1);
  static_assert(kMaxSmemBytes <= 227 * 1024, "shared memory per block");
};

template <typename O>
__device__ __forceinline__ void StoreVector(O* dst, const float* v) {
  if constexpr (std::is_same_v<O, float>) {
    *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (std::is_same_v<O, __half>) {
        w[i] = static_cast<uint32_t>(__half_as_ushort(__float2half_rn(v[2 * i]))) |
               (static_cast<uint32_t>(__half_as_ushort(__float2half_rn(v[2 * i + 1]))) << 16);
      } else {
        w[i] = static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(v[2 * i]))) |
               (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(v[2 * i + 1])))
                << 16);
      }
    }
    *reinterpret_cast<uint4*>(dst) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

template <typename T, typename O, int kBs, int kSlices, Math kMath>
__global__ void __launch_bounds__(kThreads, (TcTiling<T, kBs, kSlices>::kMinBlocks))
    SampledTcKernel(SampledArgs args) {
  using Tl = TcTiling<T, kBs, kSlices>;
  constexpr int kP = Tl::kP;
  constexpr int kS = Tl::kS;
  constexpr int kChunk = Tl::kChunk;
  constexpr int kPitch = Tl::kPitch;
  constexpr int kElem = Tl::kElem;
  constexpr int kMT = Tl::kMTiles;
  constexpr int kNT = Tl::kNTiles;

  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int64_t slot_a_col[kP];  // element column of a to load, -1: none (dup or invalid)
  __shared__ int64_t slot_b_col[kP];
  __shared__ int slot_a_src[kP];  // slot whose a rows this slot multiplies

  const T* __restrict__ a = static_cast<const T*>(args.a);
  const T* __restrict__ b = static_cast<const T*>(args.b);
  O* __restrict__ out = static_cast<O*>(args.out);
  const int64_t rows = args.rows;
  const int64_t a_cols = args.a_cols;
  const int64_t b_cols = args.b_cols;
  const int64_t nnz = args.nnz;
  const int64_t groups = args.groups;
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kP;
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int warp = tid >> 5;

  if (tid < kP) {
    const int32_t* coords = args.coords;
    auto slot_i = [&](int p, bool& ok) -> int32_t {
      const int64_t k = k0 + p;
      ok = false;
      if (k >= nnz) return -1;
      const int32_t i = __ldg(coords + 2 * k);
      const int32_t j = __ldg(coords + 2 * k + 1);
      // A corrupt coordinate yields a zero block instead of an out-of-bounds read.
      ok = i >= 0 && i < a_cols / kBs && j >= 0 && j < b_cols / kBs;
      return i;
    };
    bool ok;
    const int32_t i = slot_i(tid, ok);
    int src = tid;
    while (ok && src > 0) {
      bool prev_ok;
      if (slot_i(src - 1, prev_ok) != i || !prev_ok) break;
      --src;
    }
    slot_a_src[tid] = src;
    slot_a_col[tid] = ok && src == tid ? static_cast<int64_t>(i) * kBs : -1;
    slot_b_col[tid] = ok ? static_cast<int64_t>(__ldg(coords + 2 * (k0 + tid) + 1)) * kBs : -1;
  }
  __syncthreads();

  // Warp roles. Slices are innermost so the epilogue's per-slice partials of one tile sit
  // next to each other.
  constexpr int kWarpsPerBlock = Tl::kTilesPerBlock * kS;
  const int my_p = warp / kWarpsPerBlock;
  const int my_tile = (warp % kWarpsPerBlock) / kS;
  const int my_s = warp % kS;
  const int m_off = (my_tile / Tl::kTilesAlongN) * Tl::kTM;
  const int n_off = (my_tile % Tl::kTilesAlongN) * Tl::kTN;
  const int a_src_slot = slot_a_src[my_p];
  const uint32_t smem_base = tc::SharedAddress(smem);
  const int64_t chunks = (rows + kChunk - 1) / kChunk;

  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const T* a_g = a + g * rows * a_cols;
    const T* b_g = b + g * rows * b_cols;

    // A thread copies the same (slot, operand, row-in-chunk, packet) positions for every chunk,
    // so the per-packet addressing is worked out once per group and each issue only advances
    // the source by kChunk rows (issues come in chunk order).
    constexpr int kIters = (Tl::kStagePackets + kThreads - 1) / kThreads;
    const T* src_at[kIters];
    uint32_t dst_at[kIters];
    int64_t advance[kIters];
    int row_at[kIters];
    uint32_t copy_mask = 0;  // bit it: this packet is copied (or zero-filled) at all
    uint32_t live_mask = 0;  // bit it: it has a real source column
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int idx = tid + it * kThreads;
      const bool exists = Tl::kStagePackets % kThreads == 0 || idx < Tl::kStagePackets;
      const int q = idx % Tl::kPacketsPerRow;
      const int r = (idx / Tl::kPacketsPerRow) % kChunk;
      const int op = (idx / (Tl::kPacketsPerRow * kChunk)) & 1;
      const int p = exists ? idx / (Tl::kPacketsPerRow * kChunk * 2) : 0;
      const int64_t col = op ? slot_b_col[p] : slot_a_col[p];
      const int64_t cols = op ? b_cols : a_cols;
      // Duplicate-a slots are never read, so they are skipped rather than zero-filled.
      if (exists && (op == 1 || col >= 0 || slot_a_src[p] == p)) copy_mask |= 1u << it;
      if (exists && col >= 0) live_mask |= 1u << it;
      src_at[it] = col >= 0 ? (op ? b_g : a_g) + r * cols + col + q * (16 / kElem) : a;
      advance[it] = col >= 0 ? kChunk * cols : 0;
      row_at[it] = r;
      dst_at[it] = static_cast<uint32_t>(((p * 2 + op) * kChunk + r) * kPitch * kElem + q * 16);
    }

    auto issue = [&](int64_t chunk) {
      const int64_t row0 = chunk * kChunk;
      const uint32_t stage = smem_base + static_cast<uint32_t>((chunk % kStages) * Tl::kStageBytes);
#pragma unroll
      for (int it = 0; it < kIters; ++it) {
        if (!((copy_mask >> it) & 1u)) continue;
        const bool live = ((live_mask >> it) & 1u) && row0 + row_at[it] < rows;
        tc::CpAsync16(stage + dst_at[it], live ? src_at[it] : a, live);
        src_at[it] += advance[it];
      }
    };

    float acc[kMT][kNT][4];
    tc::ZeroAccumulators(acc);

    tc::PrimeCpAsyncRing<kStages>(chunks, issue);
    tc::DrainCpAsyncRing<kStages>(chunks, issue, [&](int64_t chunk) {
      const uint32_t stage =
          smem_base + static_cast<uint32_t>((chunk % kStages) * Tl::kStageBytes);
      const uint32_t a_tile = stage + static_cast<uint32_t>(a_src_slot * Tl::kSlotBytes);
      const uint32_t b_tile =
          stage + static_cast<uint32_t>(my_p * Tl::kSlotBytes + kChunk * kPitch * kElem);
#pragma unroll
      for (int step = 0; step < Tl::kStepsPerSlice; ++step) {
        const int kb = my_s * Tl::kRowsPerSlice + step * Tl::kK;
        if constexpr (kMath == Math::kHalf) {
          uint32_t af[kMT][4];
          uint32_t bf[kNT][2];
#pragma unroll
          for (int mi = 0; mi < kMT; ++mi) {
            // bs 8: an 8-wide block through an m16 mma; both m halves read its 8 columns.
            tc::LdMatrixATransposed(af[mi], a_tile, kPitch, kb, kBs == 8 ? 0 : m_off + mi * 16,
                                    lane, kBs == 8 ? 0 : 8);
          }
          if constexpr (kNT == 1) {
            const int r = kb + (lane & 7) + (((lane >> 3) & 1) << 3);
            tc::LdMatrixX2Trans(bf[0][0], bf[0][1],
                                b_tile + static_cast<uint32_t>((r * kPitch + n_off) * 2));
          } else {
#pragma unroll
            for (int nj = 0; nj < kNT; nj += 2) {
              tc::LdMatrixBPair(bf[nj], bf[nj + 1], b_tile, kPitch, kb, n_off + nj * 8, lane);
            }
          }
#pragma unroll
          for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
            for (int ni = 0; ni < kNT; ++ni) {
              tc::Mma16<T>(acc[mi][ni], af[mi], bf[ni]);
            }
        } else {
          const int g8 = lane >> 2;
          const int t4 = lane & 3;
          const float* as = reinterpret_cast<const float*>(smem + (a_tile - smem_base));
          const float* bs = reinterpret_cast<const float*>(smem + (b_tile - smem_base));
          float av[kMT][4];
          float bv[kNT][2];
#pragma unroll
          for (int mi = 0; mi < kMT; ++mi) {
            const int c0 = m_off + mi * 16 + g8;
            const int c1 = kBs == 8 ? c0 : c0 + 8;
            av[mi][0] = as[(kb + t4) * kPitch + c0];
            av[mi][1] = as[(kb + t4) * kPitch + c1];
            av[mi][2] = as[(kb + t4 + 4) * kPitch + c0];
            av[mi][3] = as[(kb + t4 + 4) * kPitch + c1];
          }
#pragma unroll
          for (int ni = 0; ni < kNT; ++ni) {
            bv[ni][0] = bs[(kb + t4) * kPitch + n_off + ni * 8 + g8];
            bv[ni][1] = bs[(kb + t4 + 4) * kPitch + n_off + ni * 8 + g8];
          }
          if constexpr (kMath == Math::kTf32) {
            uint32_t af[kMT][4];
            uint32_t bf[kNT][2];
#pragma unroll
            for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
              for (int c = 0; c < 4; ++c) af[mi][c] = tc::ToTf32(av[mi][c]);
#pragma unroll
            for (int ni = 0; ni < kNT; ++ni)
#pragma unroll
              for (int c = 0; c < 2; ++c) bf[ni][c] = tc::ToTf32(bv[ni][c]);
#pragma unroll
            for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
              for (int ni = 0; ni < kNT; ++ni) tc::MmaTf32(acc[mi][ni], af[mi], bf[ni]);
          } else {
            uint32_t ab[kMT][4], as_[kMT][4];
            uint32_t bb[kNT][2], bs_[kNT][2];
#pragma unroll
            for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
              for (int c = 0; c < 4; ++c) tc::SplitTf32(av[mi][c], ab[mi][c], as_[mi][c]);
#pragma unroll
            for (int ni = 0; ni < kNT; ++ni)
#pragma unroll
              for (int c = 0; c < 2; ++c) tc::SplitTf32(bv[ni][c], bb[ni][c], bs_[ni][c]);
            // Small cross terms first, so they are not lost against an already large sum.
#pragma unroll
            for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
              for (int ni = 0; ni < kNT; ++ni) {
                tc::MmaTf32(acc[mi][ni], as_[mi], bb[ni]);
                tc::MmaTf32(acc[mi][ni], ab[mi], bs_[ni]);
                tc::MmaTf32(acc[mi][ni], ab[mi], bb[ni]);
              }
          }
        }
      }
    });
    // The ring is dead from here on; its memory holds the partial tiles.

    float* red = reinterpret_cast<float*>(smem);
    // bs 8 ran m16 tiles on 8 real rows: their rows 8-15 are not spilled.
    tc::SpillAccumulators(red + (my_p * kS + my_s) * Tl::kRedBlockFloats, Tl::kRedStride, m_off,
                          n_off, acc, lane, kBs > 8);
    __syncthreads();

    // The kP blocks are contiguous in `out`, so the CTA writes one run of 16-byte vectors.
    constexpr int kVec = 16 / static_cast<int>(sizeof(O));
    constexpr int kBlockElems = kBs * kBs;
    const int64_t live_blocks = nnz - k0 < kP ? nnz - k0 : kP;
    const int elems = static_cast<int>(live_blocks) * kBlockElems;
    O* out_run = out + (g * nnz + k0) * kBlockElems;
    for (int e = tid * kVec; e < elems; e += kThreads * kVec) {
      const int p = e / kBlockElems;
      const int within = e % kBlockElems;
      const float* src = red + p * kS * Tl::kRedBlockFloats + (within / kBs) * Tl::kRedStride +
                         within % kBs;
      float v[kVec];
#pragma unroll
      for (int i = 0; i < kVec; i += 4) {
        const float4 x = *reinterpret_cast<const float4*>(src + i);
        v[i] = x.x, v[i + 1] = x.y, v[i + 2] = x.z, v[i + 3] = x.w;
      }
#pragma unroll
      for (int s = 1; s < kS; ++s) {
#pragma unroll
        for (int i = 0; i < kVec; i += 4) {
          const float4 x =
              *reinterpret_cast<const float4*>(src + s * Tl::kRedBlockFloats + i);
          v[i] += x.x, v[i + 1] += x.y, v[i + 2] += x.z, v[i + 3] += x.w;
        }
      }
      StoreVector<O>(out_run + e, v);
    }
    __syncthreads();  // the next group restages into the same memory
  }
}

template <typename T, typename O, int kBs, int kSlices, Math kMath>
cudaError_t LaunchTiling(const SampledArgs& args, cudaStream_t stream) {
  using Tl = TcTiling<T, kBs, kSlices>;
  auto kernel = SampledTcKernel<T, O, kBs, kSlices, kMath>;
  // The static slot tables count against the 48 KB default as well, hence the margin.
  if constexpr (Tl::kMaxSmemBytes > 47 * 1024) {
    // Set to the most this kernel ever asks for.
    static std::atomic<uint64_t> done_devices{0};
    const cudaError_t err =
        OptInSharedMemory(reinterpret_cast<const void*>(kernel), Tl::kMaxSmemBytes, done_devices);
    if (err != cudaSuccess) return err;
  }
  const int64_t chunks = (args.rows + Tl::kChunk - 1) / Tl::kChunk;
  // Short reductions use only part of the ring, so they ask for less memory and fit more CTAs.
  const int64_t stages = std::min<int64_t>(kStages, chunks);
  const size_t smem = static_cast<size_t>(
      std::max<int64_t>(stages * Tl::kStageBytes, Tl::kRedBytes));
  const int64_t ctas = (args.nnz + Tl::kP - 1) / Tl::kP;
  if (ctas > 2147483647) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(ctas),
                  static_cast<unsigned>(std::min<int64_t>(args.groups, kMaxGridY)));
  kernel<<<grid, kThreads, smem, stream>>>(args);
  return cudaSuccess;
}

// Long reductions over few blocks: the fewest slices (the most blocks per CTA sharing a's
// loads) whose grid still fills 7/8 of the CTA slots. Slicing further only adds waves: wide
// d = 1/16 (1,024 blocks, M = 8192) ran all 8 slices, 1,024 one-block CTAs re-reading a for
// every block (NOTES v11).
template <typename T, typename O, int kBs, int kSlices, Math kMath>
cudaError_t PickSlices(const SampledArgs& args, int64_t slots, cudaStream_t stream) {
  using Tl = TcTiling<T, kBs, kSlices>;
  if constexpr (kSlices == Tl::kWarpsPerTileSet) {
    return LaunchTiling<T, O, kBs, kSlices, kMath>(args, stream);
  } else {
    const int64_t ctas = (args.nnz + Tl::kP - 1) / Tl::kP * args.groups;
    if (ctas * 8 >= slots * 7) return LaunchTiling<T, O, kBs, kSlices, kMath>(args, stream);
    return PickSlices<T, O, kBs, 2 * kSlices, kMath>(args, slots, stream);
  }
}

template <typename T, typename O, int kBs, Math kMath>
cudaError_t PickTiling(const SampledArgs& args, cudaStream_t stream) {
  // Short reductions keep one warp per block: slicing them leaves each warp a step or two.
  if (args.rows < 512) return LaunchTiling<T, O, kBs, 1, kMath>(args, stream);
  const int64_t slots = int64_t{TcTiling<T, kBs, 1>::kMinBlocks} * MultiprocessorCount();
  return PickSlices<T, O, kBs, 1, kMath>(args, slots, stream);
}

}  // namespace

template <typename T, typename O, int kBs>
cudaError_t LaunchSampledTensorCore(const SampledArgs& args, cudaStream_t stream) {
  if constexpr (kBs == 32 && !std::is_same_v<T, float>) {
    // Experiment `wgmma_tma_sampled` (NOTES v23): pairs of blocks on TMA boxes and wgmma.
    // One CTA per pair of blocks walks all of M alone, so only where the pairs fill 7/8 of the
    // card's 3 CTA slots per SM; fewer go to the sliced kernel below. `wgmma_tma_sampled_ungated`
    // drops that condition, so that the tests' small layouts (odd block counts, empty
    // block-rows, weight stacks) run this kernel too.
    static const bool ungated = ExperimentEnabled("wgmma_tma_sampled_ungated");
    static const bool wgmma_tma_sampled = ungated || ExperimentEnabled("wgmma_tma_sampled");
    const int64_t pair_ctas = (args.nnz + 1) / 2 * args.groups;
    if (wgmma_tma_sampled && args.rows >= 2048 &&
        (ungated || 8 * pair_ctas >= 7 * 3 * MultiprocessorCount())) {
      const cudaError_t status = LaunchSampledWgmmaTma<T, O>(args, stream);
      if (status != cudaErrorNotSupported) return status;
    }
    // Persistent warps for short reductions, up to 64 rows: 1.3-1.4x at seed d = 1/4 and 1/16
    // (NOTES v5b), 1.1-1.5x at seed64 (v7e).
    if (args.rows <= 64) {
      const cudaError_t status = LaunchSampledShortTensorCore<T, O>(args, stream);
      if (status != cudaErrorNotSupported) return status;
    }
  }
  if constexpr (kBs == 32 && std::is_same_v<T, float>) {
    // The same persistent warps in TF32 / 3xTF32 for rows <= 32: seed float32 HIGHEST
    // d = 1/4 219 -> 81 us, 1/16 67 -> 30 against this file's kernel (NOTES v9b).
    if (args.rows <= 32) {
      const cudaError_t status = LaunchSampledShortTensorCore<T, O>(args, stream);
      if (status != cudaErrorNotSupported) return status;
    }
  }
  if constexpr (kBs == 8 && !std::is_same_v<T, float>) {
    // Long reductions over layouts dense enough that a 128 x 128 tile holds several blocks run
    // as dense tiles (sampled_dense_tile.cu): small bs 8 d = 1/8 500 -> 254 us. At bs 16 the
    // per-block kernel won (181 against 248 us; NOTES v12 measured). Enough blocks per tile on
    // average (a tile holding none exits at once), and enough tiles for one CTA per SM: with
    // fewer, the per-block kernel splits the rows instead.
    const int64_t tiles = SampledDenseTileCount(args);
    if (args.rows >= 512 && args.nnz >= 6 * tiles &&
        tiles * args.groups >= MultiprocessorCount()) {
      return LaunchSampledDenseTiles<T, O, kBs>(args, stream);
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    if (args.precision == 1) return PickTiling<T, O, kBs, Math::kTf32x3>(args, stream);
    return PickTiling<T, O, kBs, Math::kTf32>(args, stream);
  } else {
    return PickTiling<T, O, kBs, Math::kHalf>(args, stream);
  }
}

#define JBS_SAMPLED_TC_INSTANTIATE(T, O)                                                     \
  template cudaError_t LaunchSampledTensorCore<T, O, 8>(const SampledArgs&, cudaStream_t);   \
  template cudaError_t LaunchSampledTensorCore<T, O, 16>(const SampledArgs&, cudaStream_t);  \
  template cudaError_t LaunchSampledTensorCore<T, O, 32>(const SampledArgs&, cudaStream_t);  \
  template cudaError_t LaunchSampledTensorCore<T, O, 64>(const SampledArgs&, cudaStream_t);  \
  template cudaError_t LaunchSampledTensorCore<T, O, 128>(const SampledArgs&, cudaStream_t);

JBS_SAMPLED_TC_INSTANTIATE(__nv_bfloat16, __nv_bfloat16)
JBS_SAMPLED_TC_INSTANTIATE(__nv_bfloat16, float)
JBS_SAMPLED_TC_INSTANTIATE(__half, __half)
JBS_SAMPLED_TC_INSTANTIATE(__half, float)
JBS_SAMPLED_TC_INSTANTIATE(float, float)
#undef JBS_SAMPLED_TC_INSTANTIATE

}  // namespace jbs
