// jbs_sampled for small blocks (bs 8, 16), 16-bit inputs and long reductions, as dense tiles
// (benchmarks/NOTES.md v12: adopted at bs 8, where it halved the time; at bs 16 the per-block
// kernel won).
//
// Why: the per-block kernel (sampled_tensor_core.cu) reads a bs-wide slice of b for every
// block, as 16- or 32-byte row pieces spread over M rows, and runs an m16 mma on an 8-row
// block at bs 8. At small bs 8, d = 1/8 (M = 2048, 32,768 blocks) that is 500 us against 100 us
// for the whole dense product. Here a CTA computes one dense 128 x 128 tile of a^T b, i.e.
// 128 / bs block-rows x 128 / bs block-columns, from full 256-byte rows of both operands, and
// writes out the blocks of the layout that fall in the tile. Once a tile holds more than a few
// blocks, the dense tile costs less than its blocks one by one: at bs 8 and d = 1/8 a tile
// holds ~32 of its 256 blocks.
//
// The blocks of a tile are found in the coords table itself (row-major (i, j) pairs, the order
// Layout builds): one binary search per tile block-row for the first block at or after the
// tile's first block-column. The searches run before the main loop's first wait, so their L2
// round trips overlap the first copies. The table must be sorted, as every Layout's is; the
// per-block kernel stays the path that tolerates anything.
//
// Determinism: every output element is one thread's sum, in row order. No atomics.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "launch_util.h"
#include "sampled_tensor_core.h"
#include "tensor_core.cuh"

namespace jbs {
namespace {

constexpr int kTile = 128;        // a columns x b columns per CTA
constexpr int kChunk = 32;        // rows of the reduction per stage
constexpr int kStages = 4;
constexpr int kWarpsI = 2;        // warp grid over the tile: 2 (a columns) x 4 (b columns)
constexpr int kWarpsJ = 4;
constexpr int kThreads = 32 * kWarpsI * kWarpsJ;
constexpr int kWarpI = kTile / kWarpsI;  // 64 a columns: 4 m16 tiles
constexpr int kWarpJ = kTile / kWarpsJ;  // 32 b columns: 4 n8 tiles
constexpr int kMTiles = kWarpI / 16;
constexpr int kNTiles = kWarpJ / 8;
// 8 extra elements per staged row: the 8 rows of an ldmatrix phase land in distinct banks.
constexpr int kPitch = kTile + 8;
constexpr int kOperandBytes = kChunk * kPitch * 2;
constexpr int kStageBytes = 2 * kOperandBytes;
constexpr int kRingBytes = kStages * kStageBytes;
// fp32 tile for the epilogue, over the dead ring. A 132-float pitch costs the accumulator
// stores a 2-way conflict but lets the epilogue read 8-float pieces as two conflict-free
// float4 loads (a 136 pitch would swap the two), and the reads outnumber the stores.
constexpr int kOutPitch = kTile + 4;
constexpr int kOutBytes = kTile * kOutPitch * 4;
constexpr int kSmemBytes = kRingBytes > kOutBytes ? kRingBytes : kOutBytes;
constexpr int kPacketsPerRow = kTile * 2 / 16;
constexpr int kCopiesPerThread = 2 * kChunk * kPacketsPerRow / kThreads;
static_assert(kCopiesPerThread * kThreads == 2 * kChunk * kPacketsPerRow);
static_assert(kSmemBytes <= 113 * 1024, "two CTAs per SM");

// First k in [0, nnz) whose (i, j) is not below (i, j) in row-major order.
__device__ __forceinline__ int64_t LowerBound(const int32_t* coords, int64_t nnz, int32_t i,
                                              int32_t j) {
  int64_t lo = 0, hi = nnz;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    const int2 pair = __ldg(reinterpret_cast<const int2*>(coords) + mid);
    if (pair.x < i || (pair.x == i && pair.y < j)) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

template <typename T, typename O, int kBs>
__global__ void __launch_bounds__(kThreads, 2)
    SampledDenseTileKernel(SampledArgs args, int64_t tiles_j) {
  constexpr int kBlocksPerSide = kTile / kBs;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int64_t row_first[kBlocksPerSide];  // first k of each tile block-row's run
  __shared__ int64_t row_end[kBlocksPerSide];

  const T* __restrict__ a = static_cast<const T*>(args.a);
  const T* __restrict__ b = static_cast<const T*>(args.b);
  O* __restrict__ out = static_cast<O*>(args.out);
  const int64_t rows = args.rows;
  const int64_t a_cols = args.a_cols;
  const int64_t b_cols = args.b_cols;
  const int64_t tile_i = static_cast<int64_t>(blockIdx.x) / tiles_j;
  const int64_t tile_j = static_cast<int64_t>(blockIdx.x) % tiles_j;
  const int64_t col_a0 = tile_i * kTile;
  const int64_t col_b0 = tile_j * kTile;
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int i_off = (warp / kWarpsJ) * kWarpI;
  const int j_off = (warp % kWarpsJ) * kWarpJ;
  const uint32_t smem_base = tc::SharedAddress(smem);
  const int64_t chunks = (rows + kChunk - 1) / kChunk;

  for (int64_t g = blockIdx.y; g < args.groups; g += gridDim.y) {
    const T* a_g = a + g * rows * a_cols;
    const T* b_g = b + g * rows * b_cols;

    // Copy `it` of this thread: operand, row of the chunk, 16-byte packet of the row.
    auto issue = [&](int64_t chunk) {
      const uint32_t stage = smem_base + static_cast<uint32_t>((chunk % kStages) * kStageBytes);
#pragma unroll
      for (int it = 0; it < kCopiesPerThread; ++it) {
        const int idx = tid + it * kThreads;
        const int q = idx % kPacketsPerRow;
        const int r = (idx / kPacketsPerRow) % kChunk;
        const int op = idx / (kPacketsPerRow * kChunk);
        const int64_t row = chunk * kChunk + r;
        const int64_t col = (op ? col_b0 : col_a0) + q * 8;
        const int64_t cols = op ? b_cols : a_cols;
        const bool live = row < rows && col < cols;
        const T* src = live ? (op ? b_g : a_g) + row * cols + col : a;
        tc::CpAsync16(stage + static_cast<uint32_t>(op * kOperandBytes + (r * kPitch + q * 8) * 2),
                      src, live);
      }
    };

    tc::PrimeCpAsyncRing<kStages>(chunks, issue);
    if (g == blockIdx.y && tid < kBlocksPerSide) {
      // While the first copies are in flight: where each block-row's blocks in this tile's
      // block-columns start and end in the table.
      const int32_t i = static_cast<int32_t>(col_a0 / kBs) + tid;
      const int32_t j0 = static_cast<int32_t>(col_b0 / kBs);
      row_first[tid] = LowerBound(args.coords, args.nnz, i, j0);
      row_end[tid] = LowerBound(args.coords, args.nnz, i, j0 + kBlocksPerSide);
    }
    if (g == blockIdx.y) {
      // A tile that holds no block of the layout has nothing to write, in any group.
      const bool holds = tid < kBlocksPerSide && row_end[tid] > row_first[tid];
      if (!__syncthreads_or(holds)) {
        tc::CpAsyncWait<0>();
        return;
      }
    }

    float acc[kMTiles][kNTiles][4];
    tc::ZeroAccumulators(acc);
    tc::DrainCpAsyncRing<kStages>(chunks, issue, [&](int64_t chunk) {
      const uint32_t a_tile =
          smem_base + static_cast<uint32_t>((chunk % kStages) * kStageBytes);
      const uint32_t b_tile = a_tile + kOperandBytes;
#pragma unroll
      for (int kb = 0; kb < kChunk; kb += 16) {
        // Both operands are staged reduction-major ([row][column]), so both fragments come
        // from transposing loads: A = a^T (16 a columns x 16 rows), B = b (16 rows x 8 columns).
        uint32_t af[kMTiles][4];
        uint32_t bf[kNTiles][2];
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi) {
          tc::LdMatrixATransposed(af[mi], a_tile, kPitch, kb, i_off + mi * 16, lane);
        }
#pragma unroll
        for (int nj = 0; nj < kNTiles; nj += 2) {
          tc::LdMatrixBPair(bf[nj], bf[nj + 1], b_tile, kPitch, kb, j_off + nj * 8, lane);
        }
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
          for (int ni = 0; ni < kNTiles; ++ni) tc::Mma16<T>(acc[mi][ni], af[mi], bf[ni]);
      }
    });
    // The ring is dead: its memory takes the fp32 tile.

    float* tile = reinterpret_cast<float*>(smem);
    tc::SpillAccumulators(tile, kOutPitch, i_off, j_off, acc, lane);
    __syncthreads();

    // One warp per tile block-row at a time; each lane writes 8-element pieces of its blocks.
    constexpr int kPieces = kBs * kBs / 8;  // 8-element pieces per block
    O* out_g = out + g * args.nnz * (kBs * kBs);
    for (int br = warp; br < kBlocksPerSide; br += kThreads / 32) {
      const int64_t first = row_first[br];
      const int64_t count = row_end[br] - first;
      for (int64_t p = lane; p < count * kPieces; p += 32) {
        const int64_t k = first + p / kPieces;
        const int piece = static_cast<int>(p % kPieces);
        const int u = piece / (kBs / 8);         // row of the block
        const int v = (piece % (kBs / 8)) * 8;   // first column of the piece
        const int32_t j = __ldg(args.coords + 2 * k + 1);
        const int tc_col = static_cast<int>(j - col_b0 / kBs) * kBs + v;
        // 16-byte aligned: rows are 528 bytes and tc_col is a multiple of 8.
        const float4* src =
            reinterpret_cast<const float4*>(tile + (br * kBs + u) * kOutPitch + tc_col);
        const float4 lo = src[0];
        const float4 hi = src[1];
        O* dst = out_g + k * (kBs * kBs) + u * kBs + v;
        if constexpr (std::is_same_v<O, float>) {
          reinterpret_cast<float4*>(dst)[0] = lo;
          reinterpret_cast<float4*>(dst)[1] = hi;
        } else {
          *reinterpret_cast<uint4*>(dst) =
              make_uint4(tc::PackPair<O>(lo.x, lo.y), tc::PackPair<O>(lo.z, lo.w),
                         tc::PackPair<O>(hi.x, hi.y), tc::PackPair<O>(hi.z, hi.w));
        }
      }
    }
    __syncthreads();  // the next group restages into the same memory
  }
}

}  // namespace

template <typename T, typename O, int kBs>
cudaError_t LaunchSampledDenseTiles(const SampledArgs& args, cudaStream_t stream) {
  static_assert(sizeof(T) == 2 && (kBs == 8 || kBs == 16), "16-bit inputs, bs 8 or 16");
  auto kernel = SampledDenseTileKernel<T, O, kBs>;
  static std::atomic<uint64_t> done_devices{0};
  const cudaError_t err =
      OptInSharedMemory(reinterpret_cast<const void*>(kernel), kSmemBytes, done_devices);
  if (err != cudaSuccess) return err;
  const int64_t tiles_i = (args.a_cols + kTile - 1) / kTile;
  const int64_t tiles_j = (args.b_cols + kTile - 1) / kTile;
  if (tiles_i * tiles_j > 2147483647) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(tiles_i * tiles_j),
                  static_cast<unsigned>(std::min<int64_t>(args.groups, 65535)));
  kernel<<<grid, kThreads, kSmemBytes, stream>>>(args, tiles_j);
  return cudaSuccess;
}

int64_t SampledDenseTileCount(const SampledArgs& args) {
  return ((args.a_cols + kTile - 1) / kTile) * ((args.b_cols + kTile - 1) / kTile);
}

#define JBS_SAMPLED_DENSE_TILE_INSTANTIATE(T, O)                                       \
  template cudaError_t LaunchSampledDenseTiles<T, O, 8>(const SampledArgs&, cudaStream_t); \
  template cudaError_t LaunchSampledDenseTiles<T, O, 16>(const SampledArgs&, cudaStream_t);
JBS_SAMPLED_DENSE_TILE_INSTANTIATE(__nv_bfloat16, __nv_bfloat16)
JBS_SAMPLED_DENSE_TILE_INSTANTIATE(__nv_bfloat16, float)
JBS_SAMPLED_DENSE_TILE_INSTANTIATE(__half, __half)
JBS_SAMPLED_DENSE_TILE_INSTANTIATE(__half, float)
#undef JBS_SAMPLED_DENSE_TILE_INSTANTIATE

}  // namespace jbs
