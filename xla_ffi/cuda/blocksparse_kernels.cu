// SIMT (CUDA-core) block-sparse kernels. These are the reference-quality GPU baseline: every
// (input type, output type, block size) goes through one Launch*For<T, O, kBs> entry point so a
// tensor-core implementation can later take over individual combinations without touching the
// dispatch or the FFI layer.
//
// Determinism: every output element is accumulated by exactly one thread (or, for the sampled
// kernel with several row slices, combined in slice order by one thread), in the order fixed by
// the tables, so results are bitwise reproducible run to run. No atomics anywhere.

#include "blocksparse_kernels.h"
#include "bsmm_tensor_core.h"
#include "launch_util.h"
#include "sampled_tensor_core.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace jbs {
namespace {

// Grid y/z are limited to 65535; larger extents are covered by grid-stride loops.
constexpr int64_t kMaxGridYZ = 65535;
constexpr int64_t kMaxGridX = 2147483647;

template <typename T>
struct AccumulatorOf {
  using type = float;
};
template <>
struct AccumulatorOf<double> {
  using type = double;
};

// Global memory is moved in 16-byte packets of raw bits; conversion to the accumulator type
// happens once, when the packet is written to shared memory.
constexpr int kPacketBytes = 16;

template <typename T>
__host__ __device__ constexpr int PacketWidth() {
  return kPacketBytes / static_cast<int>(sizeof(T));
}

template <typename T>
__device__ __forceinline__ uint4 LoadPacket(const T* src, bool aligned) {
  if (aligned) return __ldg(reinterpret_cast<const uint4*>(src));
  // Only reached if XLA hands us a buffer that is element- but not 16-byte-aligned.
  uint4 raw;
  if constexpr (sizeof(T) == 2) {
    const unsigned short* s = reinterpret_cast<const unsigned short*>(src);
    raw.x = __ldg(s + 0) | (static_cast<uint32_t>(__ldg(s + 1)) << 16);
    raw.y = __ldg(s + 2) | (static_cast<uint32_t>(__ldg(s + 3)) << 16);
    raw.z = __ldg(s + 4) | (static_cast<uint32_t>(__ldg(s + 5)) << 16);
    raw.w = __ldg(s + 6) | (static_cast<uint32_t>(__ldg(s + 7)) << 16);
  } else if constexpr (sizeof(T) == 4) {
    const unsigned int* s = reinterpret_cast<const unsigned int*>(src);
    raw = make_uint4(__ldg(s + 0), __ldg(s + 1), __ldg(s + 2), __ldg(s + 3));
  } else {
    const unsigned long long* s = reinterpret_cast<const unsigned long long*>(src);
    const unsigned long long lo = __ldg(s + 0);
    const unsigned long long hi = __ldg(s + 1);
    raw = make_uint4(static_cast<uint32_t>(lo), static_cast<uint32_t>(lo >> 32),
                     static_cast<uint32_t>(hi), static_cast<uint32_t>(hi >> 32));
  }
  return raw;
}

__device__ __forceinline__ uint32_t PacketWord(const uint4& raw, int index) {
  return index == 0 ? raw.x : index == 1 ? raw.y : index == 2 ? raw.z : raw.w;
}

template <typename T, typename Acc>
__device__ __forceinline__ void UnpackPacket(const uint4& raw, Acc (&dst)[PacketWidth<T>()]) {
  if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int i = 0; i < 4; ++i) dst[i] = __uint_as_float(PacketWord(raw, i));
  } else if constexpr (std::is_same_v<T, double>) {
    dst[0] = __hiloint2double(static_cast<int>(raw.y), static_cast<int>(raw.x));
    dst[1] = __hiloint2double(static_cast<int>(raw.w), static_cast<int>(raw.z));
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    // bf16 is the top half of a float, so widening is a shift: exact and cheaper than cvt.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t word = PacketWord(raw, i);
      dst[2 * i] = __uint_as_float(word << 16);
      dst[2 * i + 1] = __uint_as_float(word & 0xffff0000u);
    }
  } else {
    static_assert(std::is_same_v<T, __half>, "unsupported element type");
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t word = PacketWord(raw, i);
      dst[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(word & 0xffffu)));
      dst[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(word >> 16)));
    }
  }
}

// Shared-memory runs are always 16-byte aligned by construction (strides and offsets are
// multiples of the vector width), so these can use 128-bit LDS/STS.
template <typename Acc, int kCount>
__device__ __forceinline__ void LoadSharedRun(const Acc* src, Acc (&dst)[kCount]) {
  if constexpr (std::is_same_v<Acc, float>) {
    static_assert(kCount % 4 == 0, "float runs are read as float4");
#pragma unroll
    for (int i = 0; i < kCount; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(src + i);
      dst[i] = v.x, dst[i + 1] = v.y, dst[i + 2] = v.z, dst[i + 3] = v.w;
    }
  } else {
    static_assert(kCount % 2 == 0, "double runs are read as double2");
#pragma unroll
    for (int i = 0; i < kCount; i += 2) {
      const double2 v = *reinterpret_cast<const double2*>(src + i);
      dst[i] = v.x, dst[i + 1] = v.y;
    }
  }
}

template <typename Acc, int kCount>
__device__ __forceinline__ void StoreSharedRun(Acc* dst, const Acc (&src)[kCount]) {
  if constexpr (std::is_same_v<Acc, float>) {
    static_assert(kCount % 4 == 0, "float runs are written as float4");
#pragma unroll
    for (int i = 0; i < kCount; i += 4) {
      *reinterpret_cast<float4*>(dst + i) = make_float4(src[i], src[i + 1], src[i + 2], src[i + 3]);
    }
  } else {
    static_assert(kCount % 2 == 0, "double runs are written as double2");
#pragma unroll
    for (int i = 0; i < kCount; i += 2) {
      *reinterpret_cast<double2*>(dst + i) = make_double2(src[i], src[i + 1]);
    }
  }
}

template <typename O, typename Acc>
__device__ __forceinline__ O ConvertOut(Acc value) {
  if constexpr (std::is_same_v<O, __half>) {
    return __float2half_rn(value);
  } else if constexpr (std::is_same_v<O, __nv_bfloat16>) {
    return __float2bfloat16_rn(value);
  } else {
    return static_cast<O>(value);
  }
}

template <typename O, typename Acc>
__device__ __forceinline__ uint32_t PackPair(Acc lo, Acc hi) {
  if constexpr (std::is_same_v<O, __half>) {
    return static_cast<uint32_t>(__half_as_ushort(__float2half_rn(lo))) |
           (static_cast<uint32_t>(__half_as_ushort(__float2half_rn(hi))) << 16);
  } else {
    static_assert(std::is_same_v<O, __nv_bfloat16>, "only 16-bit outputs are packed");
    return static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
           (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
  }
}

// Writes kCount consecutive outputs. `aligned` means the buffer base is 16-byte aligned; the
// callers only pass offsets that are multiples of 4 elements, which keeps every vector store
// naturally aligned.
template <typename O, typename Acc, int kCount>
__device__ __forceinline__ void StoreGlobalRun(O* dst, const Acc (&src)[kCount], bool aligned) {
  static_assert(kCount % 4 == 0, "output runs are whole groups of 4");
  if (!aligned) {
#pragma unroll
    for (int i = 0; i < kCount; ++i) dst[i] = ConvertOut<O>(src[i]);
    return;
  }
  if constexpr (std::is_same_v<O, float>) {
#pragma unroll
    for (int i = 0; i < kCount; i += 4) {
      *reinterpret_cast<float4*>(dst + i) = make_float4(src[i], src[i + 1], src[i + 2], src[i + 3]);
    }
  } else if constexpr (std::is_same_v<O, double>) {
#pragma unroll
    for (int i = 0; i < kCount; i += 2) {
      *reinterpret_cast<double2*>(dst + i) = make_double2(src[i], src[i + 1]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < kCount; i += 4) {
      *reinterpret_cast<uint2*>(dst + i) =
          make_uint2(PackPair<O>(src[i], src[i + 1]), PackPair<O>(src[i + 2], src[i + 3]));
    }
  }
}

__device__ __forceinline__ float MulAdd(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ __forceinline__ double MulAdd(double a, double b, double c) { return __fma_rn(a, b, c); }

__host__ __device__ constexpr int CeilDiv(int a, int b) { return (a + b - 1) / b; }

__device__ __forceinline__ int64_t ClampIndex(int64_t value, int64_t lo, int64_t hi) {
  return value < lo ? lo : value > hi ? hi : value;
}

// ------------------------------------------------------------------------------------------
// jbs_bsmm
// ------------------------------------------------------------------------------------------

// One thread block produces a kTileRows x bs tile of one output block-column. Per table entry
// the bs-long reduction is consumed in kChunk slices so that two pipeline stages of
// (A slice + W slice) fit comfortably in static shared memory (< 48 KB) for every bs, and each
// block still owns >= 2048 outputs to amortize the per-entry overhead.
template <int kBs, typename Acc>
struct BsmmTiling {
  static constexpr bool kWideAcc = sizeof(Acc) == 8;
  static constexpr int kTileRows = kBs == 8 ? 256 : kBs <= 64 ? 128 : 64;
  static constexpr int kThreadRows = kBs >= 64 ? 8 : 4;
  static constexpr int kThreadCols = 4;
  static constexpr int kChunk = kBs == 8 ? 8 : (kBs >= 64 && kWideAcc) ? 8 : 16;
  static constexpr int kChunksPerEntry = kBs / kChunk;
  static constexpr int kThreadsAlongCols = kBs / kThreadCols;
  static constexpr int kThreads = (kTileRows / kThreadRows) * kThreadsAlongCols;
  // An explicit occupancy target: left to itself ptxas picked 80 registers for some float
  // variants and spilled. Double accumulators need more than 128 registers at 256 threads.
  static constexpr int kMinBlocks = kWideAcc ? 1 : 2;
  // Padding keeps 16-byte alignment of rows while spreading the transposing stores of A over
  // more banks.
  static constexpr int kPad = 16 / static_cast<int>(sizeof(Acc));
  // A is staged k-major (kChunk rows of kTileRows) so a thread's rows are contiguous and can be
  // read with vector LDS; W is staged as op(W) rows (kChunk rows of bs).
  static constexpr int kAStride = kTileRows + kPad;
  static constexpr int kWStride = kBs + kPad;
  static constexpr int kStageElems = kChunk * (kAStride + kWStride);
  static_assert(kBs % kChunk == 0);
  static_assert(kTileRows % kThreadRows == 0);
  static_assert(2 * kStageElems * sizeof(Acc) <= 48 * 1024, "static shared memory limit");
};

template <typename T, typename O, int kBs>
__global__ void __launch_bounds__(BsmmTiling<kBs, typename AccumulatorOf<T>::type>::kThreads,
                                  BsmmTiling<kBs, typename AccumulatorOf<T>::type>::kMinBlocks)
    BsmmSimtKernel(BsmmArgs args, int64_t row_tiles, bool aligned) {
  using Acc = typename AccumulatorOf<T>::type;
  using Tiling = BsmmTiling<kBs, Acc>;
  constexpr int kTileRows = Tiling::kTileRows;
  constexpr int kThreadRows = Tiling::kThreadRows;
  constexpr int kThreadCols = Tiling::kThreadCols;
  constexpr int kChunk = Tiling::kChunk;
  constexpr int kThreads = Tiling::kThreads;
  constexpr int kWidth = PacketWidth<T>();
  static_assert(kChunk % kWidth == 0 && kBs % kWidth == 0);
  constexpr int kPacketsPerARow = kChunk / kWidth;
  constexpr int kAPackets = kTileRows * kPacketsPerARow;
  constexpr int kWPackets = kChunk * kBs / kWidth;
  constexpr int kAPacketsPerThread = CeilDiv(kAPackets, kThreads);
  constexpr int kWPacketsPerThread = CeilDiv(kWPackets, kThreads);

  __shared__ __align__(16) Acc stage[2][Tiling::kStageElems];

  const T* __restrict__ a = static_cast<const T*>(args.a);
  const T* __restrict__ w = static_cast<const T*>(args.w);
  O* __restrict__ out = static_cast<O*>(args.out);

  const int tid = static_cast<int>(threadIdx.x);
  const int thread_col = tid % Tiling::kThreadsAlongCols;
  const int thread_row = tid / Tiling::kThreadsAlongCols;

  // Kernel parameters are copied into registers up front; referencing the parameter struct
  // from the lambdas below otherwise risks a local-memory copy of it.
  const int64_t rows = args.rows;
  const int64_t a_cols = args.a_cols;
  const int64_t nnz = args.nnz;
  const int64_t groups = args.groups;
  const bool transpose_w = args.transpose_w;
  const int32_t* __restrict__ entries = args.entries;
  const int64_t out_block = blockIdx.x;
  const int64_t out_cols = args.out_blocks * kBs;
  const int64_t a_blocks = a_cols / kBs;
  // Tables come from trusted Python code, but a corrupt one must not fault: clamp the range
  // and treat out-of-range entries as zero blocks.
  const int64_t entry_begin = ClampIndex(__ldg(args.offsets + out_block), 0, nnz);
  const int64_t entry_end = ClampIndex(__ldg(args.offsets + out_block + 1), entry_begin, nnz);
  const int64_t steps = (entry_end - entry_begin) * Tiling::kChunksPerEntry;

  for (int64_t g = blockIdx.z; g < groups; g += gridDim.z) {
    for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
      const int64_t row0 = tile * kTileRows;
      uint4 a_regs[kAPacketsPerThread];
      uint4 w_regs[kWPacketsPerThread];

      // Global -> registers for pipeline step `step`; issued before the FMAs of the previous
      // step so the loads are in flight while computing.
      auto fetch = [&](int64_t step) {
        const int64_t entry = entry_begin + step / Tiling::kChunksPerEntry;
        const int chunk = static_cast<int>(step % Tiling::kChunksPerEntry);
        const int32_t a_blk = __ldg(entries + 2 * entry);
        const int32_t w_blk = __ldg(entries + 2 * entry + 1);
        const bool valid = a_blk >= 0 && a_blk < a_blocks && w_blk >= 0 && w_blk < nnz;
        const T* a_src = a + g * rows * a_cols + static_cast<int64_t>(a_blk) * kBs +
                         chunk * kChunk;
#pragma unroll
        for (int p = 0; p < kAPacketsPerThread; ++p) {
          const int packet = tid + p * kThreads;
          const int r = packet / kPacketsPerARow;
          const int q = packet % kPacketsPerARow;
          const int64_t row = row0 + r;
          const bool live = (kAPackets % kThreads == 0 || packet < kAPackets) && valid &&
                            row < rows;
          a_regs[p] = live ? LoadPacket(a_src + row * a_cols + q * kWidth, aligned)
                           : make_uint4(0, 0, 0, 0);
        }
        const T* w_src = w + (g * nnz + w_blk) * (kBs * kBs);
#pragma unroll
        for (int p = 0; p < kWPacketsPerThread; ++p) {
          const int packet = tid + p * kThreads;
          const bool live = (kWPackets % kThreads == 0 || packet < kWPackets) && valid;
          // op(W)[kk][n]: untransposed rows are contiguous; transposed, op(W) rows are W columns
          // so each packet walks down n (one packet per W row) to keep shared stores conflict-free.
          const int offset = transpose_w ? (packet % kBs) * kBs + chunk * kChunk +
                                                    (packet / kBs) * kWidth
                                              : chunk * kChunk * kBs + packet * kWidth;
          w_regs[p] = live ? LoadPacket(w_src + offset, aligned) : make_uint4(0, 0, 0, 0);
        }
      };

      auto stash = [&](int buffer) {
        Acc* a_stage = stage[buffer];
        Acc* w_stage = a_stage + kChunk * Tiling::kAStride;
#pragma unroll
        for (int p = 0; p < kAPacketsPerThread; ++p) {
          const int packet = tid + p * kThreads;
          if (kAPackets % kThreads != 0 && packet >= kAPackets) continue;
          Acc values[kWidth];
          UnpackPacket<T>(a_regs[p], values);
          const int r = packet / kPacketsPerARow;
          const int q = packet % kPacketsPerARow;
#pragma unroll
          for (int j = 0; j < kWidth; ++j) a_stage[(q * kWidth + j) * Tiling::kAStride + r] = values[j];
        }
#pragma unroll
        for (int p = 0; p < kWPacketsPerThread; ++p) {
          const int packet = tid + p * kThreads;
          if (kWPackets % kThreads != 0 && packet >= kWPackets) continue;
          Acc values[kWidth];
          UnpackPacket<T>(w_regs[p], values);
          if (transpose_w) {
            const int n = packet % kBs;
            const int kk = (packet / kBs) * kWidth;
#pragma unroll
            for (int j = 0; j < kWidth; ++j) w_stage[(kk + j) * Tiling::kWStride + n] = values[j];
          } else {
            const int kk = packet * kWidth / kBs;
            const int n = packet * kWidth % kBs;
            StoreSharedRun(w_stage + kk * Tiling::kWStride + n, values);
          }
        }
      };

      Acc acc[kThreadRows][kThreadCols];
#pragma unroll
      for (int i = 0; i < kThreadRows; ++i)
#pragma unroll
        for (int j = 0; j < kThreadCols; ++j) acc[i][j] = Acc(0);

      if (steps > 0) {
        fetch(0);
        stash(0);
        __syncthreads();
      }
      // Two shared buffers: step s computes from buffer s&1 while step s+1 is stored into the
      // other one, so a single barrier per step suffices.
      for (int64_t step = 0; step < steps; ++step) {
        const int buffer = static_cast<int>(step & 1);
        const bool has_next = step + 1 < steps;
        if (has_next) fetch(step + 1);
        const Acc* a_stage = stage[buffer];
        const Acc* w_stage = a_stage + kChunk * Tiling::kAStride;
#pragma unroll
        for (int kk = 0; kk < kChunk; ++kk) {
          Acc a_frag[kThreadRows];
          Acc w_frag[kThreadCols];
          LoadSharedRun(a_stage + kk * Tiling::kAStride + thread_row * kThreadRows, a_frag);
          LoadSharedRun(w_stage + kk * Tiling::kWStride + thread_col * kThreadCols, w_frag);
#pragma unroll
          for (int i = 0; i < kThreadRows; ++i)
#pragma unroll
            for (int j = 0; j < kThreadCols; ++j) acc[i][j] = MulAdd(a_frag[i], w_frag[j], acc[i][j]);
        }
        if (has_next) stash(buffer ^ 1);
        __syncthreads();
      }

#pragma unroll
      for (int i = 0; i < kThreadRows; ++i) {
        const int64_t row = row0 + thread_row * kThreadRows + i;
        if (row < rows) {
          StoreGlobalRun(out + (g * rows + row) * out_cols + out_block * kBs +
                             thread_col * kThreadCols,
                         acc[i], aligned);
        }
      }
    }
  }
}

template <typename T, typename O, int kBs>
cudaError_t LaunchBsmmSimt(const BsmmArgs& args, bool aligned, cudaStream_t stream) {
  using Tiling = BsmmTiling<kBs, typename AccumulatorOf<T>::type>;
  const int64_t row_tiles = (args.rows + Tiling::kTileRows - 1) / Tiling::kTileRows;
  if (args.out_blocks > kMaxGridX) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(args.out_blocks),
                  static_cast<unsigned>(std::min(row_tiles, kMaxGridYZ)),
                  static_cast<unsigned>(std::min(args.groups, kMaxGridYZ)));
  BsmmSimtKernel<T, O, kBs><<<grid, Tiling::kThreads, 0, stream>>>(args, row_tiles, aligned);
  return cudaSuccess;
}

// ------------------------------------------------------------------------------------------
// jbs_sampled
// ------------------------------------------------------------------------------------------

// One thread block per (k, g) owns the bs x bs output block and walks all M rows in chunks of
// kChunkRows. Small blocks have too few outputs to keep a block busy, so the threads are split
// into kSlices independent groups that each reduce a fixed sub-range of every chunk; the slices
// are then summed in slice order, which keeps the result deterministic.
template <int kBs, typename Acc>
struct SampledTiling {
  static constexpr bool kWideAcc = sizeof(Acc) == 8;
  static constexpr int kThreadRows = kBs == 128 ? 8 : 4;
  // 512 threads cap a thread at 128 registers, too few for 8x4 double accumulators plus the
  // prefetch registers, so double bs=128 uses 256 threads with 8x8 tiles instead.
  static constexpr int kThreadCols = (kBs == 128 && kWideAcc) ? 8 : 4;
  static constexpr int kThreadsAlongCols = kBs / kThreadCols;
  static constexpr int kThreadsPerSlice = (kBs / kThreadRows) * kThreadsAlongCols;
  static constexpr int kThreads = kBs == 128 ? kThreadsPerSlice : kBs >= 32 ? 256 : 128;
  static constexpr int kSlices = kThreads / kThreadsPerSlice;
  static constexpr int kMinBlocks = (kWideAcc || kThreads > 256) ? 1 : 2;
  static constexpr int kChunkRows = kBs == 8    ? (kWideAcc ? 64 : 128)
                                    : kBs == 16 ? 64
                                    : kBs == 32 ? 32
                                    : kBs == 64 ? 16
                                                : (kWideAcc ? 8 : 16);
  static constexpr int kRowsPerSlice = kChunkRows / kSlices;
  static constexpr int kPad = 16 / static_cast<int>(sizeof(Acc));
  static constexpr int kStride = kBs + kPad;
  // Both operands are staged row-major, which is already reduction-major here.
  static constexpr int kStageElems = 2 * kChunkRows * kStride;
  static constexpr int kReduceElems = kSlices > 1 ? kSlices * kBs * kBs : 0;
  static constexpr int kSharedElems =
      2 * kStageElems > kReduceElems ? 2 * kStageElems : kReduceElems;
  static_assert(kThreads % kThreadsPerSlice == 0);
  static_assert(kChunkRows % kSlices == 0 && kRowsPerSlice >= 1);
  static_assert(kSharedElems * sizeof(Acc) <= 48 * 1024, "static shared memory limit");
};

template <typename T, typename O, int kBs>
__global__ void __launch_bounds__(SampledTiling<kBs, typename AccumulatorOf<T>::type>::kThreads,
                                  SampledTiling<kBs, typename AccumulatorOf<T>::type>::kMinBlocks)
    SampledSimtKernel(SampledArgs args, bool aligned) {
  using Acc = typename AccumulatorOf<T>::type;
  using Tiling = SampledTiling<kBs, Acc>;
  constexpr int kThreadRows = Tiling::kThreadRows;
  constexpr int kThreadCols = Tiling::kThreadCols;
  constexpr int kChunkRows = Tiling::kChunkRows;
  constexpr int kThreads = Tiling::kThreads;
  constexpr int kWidth = PacketWidth<T>();
  static_assert(kBs % kWidth == 0);
  constexpr int kPacketsPerRow = kBs / kWidth;
  constexpr int kPackets = kChunkRows * kPacketsPerRow;
  constexpr int kPacketsPerThread = CeilDiv(kPackets, kThreads);

  __shared__ __align__(16) Acc shared[Tiling::kSharedElems];

  const T* __restrict__ a = static_cast<const T*>(args.a);
  const T* __restrict__ b = static_cast<const T*>(args.b);
  O* __restrict__ out = static_cast<O*>(args.out);

  const int tid = static_cast<int>(threadIdx.x);
  const int slice = tid / Tiling::kThreadsPerSlice;
  const int slice_lane = tid % Tiling::kThreadsPerSlice;
  const int thread_col = slice_lane % Tiling::kThreadsAlongCols;
  const int thread_row = slice_lane / Tiling::kThreadsAlongCols;

  const int64_t rows = args.rows;
  const int64_t a_cols = args.a_cols;
  const int64_t b_cols = args.b_cols;
  const int64_t nnz = args.nnz;
  const int64_t groups = args.groups;
  const int64_t k = blockIdx.x;
  const int32_t block_i = __ldg(args.coords + 2 * k);
  const int32_t block_j = __ldg(args.coords + 2 * k + 1);
  // A corrupt coordinate yields a zero block instead of an out-of-bounds read.
  const bool valid = block_i >= 0 && block_i < a_cols / kBs && block_j >= 0 &&
                     block_j < b_cols / kBs;
  const int64_t steps = valid ? (rows + kChunkRows - 1) / kChunkRows : 0;

  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const T* a_src = a + g * rows * a_cols + static_cast<int64_t>(block_i) * kBs;
    const T* b_src = b + g * rows * b_cols + static_cast<int64_t>(block_j) * kBs;
    uint4 a_regs[kPacketsPerThread];
    uint4 b_regs[kPacketsPerThread];

    auto fetch = [&](int64_t step) {
      const int64_t row0 = step * kChunkRows;
#pragma unroll
      for (int p = 0; p < kPacketsPerThread; ++p) {
        const int packet = tid + p * kThreads;
        const int64_t row = row0 + packet / kPacketsPerRow;
        const int col = (packet % kPacketsPerRow) * kWidth;
        const bool live = (kPackets % kThreads == 0 || packet < kPackets) && row < rows;
        a_regs[p] = live ? LoadPacket(a_src + row * a_cols + col, aligned)
                         : make_uint4(0, 0, 0, 0);
        b_regs[p] = live ? LoadPacket(b_src + row * b_cols + col, aligned)
                         : make_uint4(0, 0, 0, 0);
      }
    };

    auto stash = [&](int buffer) {
      Acc* a_stage = shared + buffer * Tiling::kStageElems;
      Acc* b_stage = a_stage + kChunkRows * Tiling::kStride;
#pragma unroll
      for (int p = 0; p < kPacketsPerThread; ++p) {
        const int packet = tid + p * kThreads;
        if (kPackets % kThreads != 0 && packet >= kPackets) continue;
        const int offset =
            (packet / kPacketsPerRow) * Tiling::kStride + (packet % kPacketsPerRow) * kWidth;
        Acc values[kWidth];
        UnpackPacket<T>(a_regs[p], values);
        StoreSharedRun(a_stage + offset, values);
        UnpackPacket<T>(b_regs[p], values);
        StoreSharedRun(b_stage + offset, values);
      }
    };

    Acc acc[kThreadRows][kThreadCols];
#pragma unroll
    for (int i = 0; i < kThreadRows; ++i)
#pragma unroll
      for (int j = 0; j < kThreadCols; ++j) acc[i][j] = Acc(0);

    if (steps > 0) {
      fetch(0);
      stash(0);
      __syncthreads();
    }
    for (int64_t step = 0; step < steps; ++step) {
      const int buffer = static_cast<int>(step & 1);
      const bool has_next = step + 1 < steps;
      if (has_next) fetch(step + 1);
      const Acc* a_stage = shared + buffer * Tiling::kStageElems;
      const Acc* b_stage = a_stage + kChunkRows * Tiling::kStride;
#pragma unroll
      for (int rr = 0; rr < Tiling::kRowsPerSlice; ++rr) {
        const int row = slice * Tiling::kRowsPerSlice + rr;
        Acc a_frag[kThreadRows];
        Acc b_frag[kThreadCols];
        LoadSharedRun(a_stage + row * Tiling::kStride + thread_row * kThreadRows, a_frag);
        LoadSharedRun(b_stage + row * Tiling::kStride + thread_col * kThreadCols, b_frag);
#pragma unroll
        for (int i = 0; i < kThreadRows; ++i)
#pragma unroll
          for (int j = 0; j < kThreadCols; ++j) acc[i][j] = MulAdd(a_frag[i], b_frag[j], acc[i][j]);
      }
      if (has_next) stash(buffer ^ 1);
      __syncthreads();
    }

    O* out_block = out + (g * nnz + k) * (kBs * kBs);
    if constexpr (Tiling::kSlices == 1) {
#pragma unroll
      for (int i = 0; i < kThreadRows; ++i) {
        StoreGlobalRun(out_block + (thread_row * kThreadRows + i) * kBs + thread_col * kThreadCols,
                       acc[i], aligned);
      }
    } else {
      // The staging buffers are dead here (the loop ended on a barrier), so reuse them for the
      // per-slice partial sums.
      Acc* partials = shared;
#pragma unroll
      for (int i = 0; i < kThreadRows; ++i) {
        StoreSharedRun(partials + slice * (kBs * kBs) + (thread_row * kThreadRows + i) * kBs +
                           thread_col * kThreadCols,
                       acc[i]);
      }
      __syncthreads();
      for (int index = tid; index < kBs * kBs; index += kThreads) {
        Acc total = partials[index];
#pragma unroll
        for (int s = 1; s < Tiling::kSlices; ++s) total += partials[s * (kBs * kBs) + index];
        out_block[index] = ConvertOut<O>(total);
      }
      // The next group iteration restages into the same memory.
      __syncthreads();
    }
  }
}

template <typename T, typename O, int kBs>
cudaError_t LaunchSampledSimt(const SampledArgs& args, bool aligned, cudaStream_t stream) {
  using Tiling = SampledTiling<kBs, typename AccumulatorOf<T>::type>;
  if (args.nnz > kMaxGridX) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(args.nnz),
                  static_cast<unsigned>(std::min(args.groups, kMaxGridYZ)));
  SampledSimtKernel<T, O, kBs><<<grid, Tiling::kThreads, 0, stream>>>(args, aligned);
  return cudaSuccess;
}

// ------------------------------------------------------------------------------------------
// Dispatch. Launch*For<T, O, kBs> is the single per-combination hook: a tensor-core kernel
// replaces the SIMT one by specializing (or branching on args.precision) here.
// ------------------------------------------------------------------------------------------

template <typename T>
constexpr ElementType ElementTypeOf() {
  if constexpr (std::is_same_v<T, float>) return ElementType::kF32;
  if constexpr (std::is_same_v<T, double>) return ElementType::kF64;
  if constexpr (std::is_same_v<T, __half>) return ElementType::kF16;
  return ElementType::kBF16;
}

template <typename T, typename O, int kBs>
cudaError_t LaunchBsmmFor(const BsmmArgs& args, cudaStream_t stream) {
  // Tensor cores take every 16-bit and float32 case they can; float64 and misaligned buffers
  // come back as cudaErrorNotSupported and use the SIMT kernel.
  if constexpr (!std::is_same_v<T, double>) {
    const cudaError_t tc =
        LaunchBsmmTensorCore(ElementTypeOf<T>(), ElementTypeOf<O>(), args, stream);
    if (tc != cudaErrorNotSupported) return tc;
  }
  const bool aligned = Aligned16(args.a) && Aligned16(args.w) && Aligned16(args.out);
  return LaunchBsmmSimt<T, O, kBs>(args, aligned, stream);
}

template <typename T, typename O, int kBs>
cudaError_t LaunchSampledFor(const SampledArgs& args, cudaStream_t stream) {
  const bool aligned = Aligned16(args.a) && Aligned16(args.b) && Aligned16(args.out);
  // cp.async and the vector stores of the tensor-core kernel need 16-byte aligned buffers.
  if constexpr (!std::is_same_v<T, double>) {
    if (aligned) return LaunchSampledTensorCore<T, O, kBs>(args, stream);
  }
  return LaunchSampledSimt<T, O, kBs>(args, aligned, stream);
}

template <typename T, typename O>
cudaError_t DispatchBsmmBlockSize(const BsmmArgs& args, cudaStream_t stream) {
  switch (args.block_size) {
    case 8: return LaunchBsmmFor<T, O, 8>(args, stream);
    case 16: return LaunchBsmmFor<T, O, 16>(args, stream);
    case 32: return LaunchBsmmFor<T, O, 32>(args, stream);
    case 64: return LaunchBsmmFor<T, O, 64>(args, stream);
    case 128: return LaunchBsmmFor<T, O, 128>(args, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename T, typename O>
cudaError_t DispatchSampledBlockSize(const SampledArgs& args, cudaStream_t stream) {
  switch (args.block_size) {
    case 8: return LaunchSampledFor<T, O, 8>(args, stream);
    case 16: return LaunchSampledFor<T, O, 16>(args, stream);
    case 32: return LaunchSampledFor<T, O, 32>(args, stream);
    case 64: return LaunchSampledFor<T, O, 64>(args, stream);
    case 128: return LaunchSampledFor<T, O, 128>(args, stream);
    default: return cudaErrorInvalidValue;
  }
}

// Calls `launch.template operator()<T, O>()` for the contract's (T, O) pair, or returns
// cudaErrorInvalidValue for any other pair.
template <typename Launch>
cudaError_t DispatchTypes(ElementType input, ElementType output, Launch&& launch) {
  switch (input) {
    case ElementType::kF32:
      if (output == ElementType::kF32) return launch.template operator()<float, float>();
      break;
    case ElementType::kF64:
      if (output == ElementType::kF64) return launch.template operator()<double, double>();
      break;
    case ElementType::kF16:
      if (output == ElementType::kF16) return launch.template operator()<__half, __half>();
      if (output == ElementType::kF32) return launch.template operator()<__half, float>();
      break;
    case ElementType::kBF16:
      if (output == ElementType::kBF16) {
        return launch.template operator()<__nv_bfloat16, __nv_bfloat16>();
      }
      if (output == ElementType::kF32) return launch.template operator()<__nv_bfloat16, float>();
      break;
  }
  return cudaErrorInvalidValue;
}

struct BsmmLaunch {
  const BsmmArgs& args;
  cudaStream_t stream;
  template <typename T, typename O>
  cudaError_t operator()() const {
    return DispatchBsmmBlockSize<T, O>(args, stream);
  }
};

struct SampledLaunch {
  const SampledArgs& args;
  cudaStream_t stream;
  template <typename T, typename O>
  cudaError_t operator()() const {
    return DispatchSampledBlockSize<T, O>(args, stream);
  }
};

}  // namespace

bool IsSupportedTypePair(ElementType input, ElementType output) {
  if (input == output) return true;
  return output == ElementType::kF32 &&
         (input == ElementType::kF16 || input == ElementType::kBF16);
}

bool IsSupportedBlockSize(int64_t block_size) {
  return block_size == 8 || block_size == 16 || block_size == 32 || block_size == 64 ||
         block_size == 128;
}

cudaError_t LaunchBsmm(ElementType input, ElementType output, const BsmmArgs& args,
                       cudaStream_t stream) {
  if (!IsSupportedTypePair(input, output) || !IsSupportedBlockSize(args.block_size)) {
    return cudaErrorInvalidValue;
  }
  if (args.groups == 0 || args.rows == 0 || args.out_blocks == 0) return cudaSuccess;
  return DispatchTypes(input, output, BsmmLaunch{args, stream});
}

cudaError_t LaunchSampled(ElementType input, ElementType output, const SampledArgs& args,
                          cudaStream_t stream) {
  if (!IsSupportedTypePair(input, output) || !IsSupportedBlockSize(args.block_size)) {
    return cudaErrorInvalidValue;
  }
  // rows == 0 still launches: the contract requires zeros in that case.
  if (args.groups == 0 || args.nnz == 0) return cudaSuccess;
  return DispatchTypes(input, output, SampledLaunch{args, stream});
}

}  // namespace jbs
