// How fast do TMA boxes stream from L2 into shared memory, by the width of a box row?
//
// v25 (bs 16, 32-byte box rows) moved its bytes at half the rate of v17 (bs 32, 64-byte rows) on
// the same H100 (benchmarks/NOTES.md, session 11). If a box row costs one request whatever its
// width, 128-byte rows (x stored transposed) would double v17's rate as well. This probe
// measures the rate alone: CTAs whose producer lane streams boxes of `rows` x `row_bytes` from
// an L2-resident buffer through a ring of mbarrier stages that a consumer warp releases at once,
// with no math. Box origins follow a pseudo-random block-row order, as the kernels' do; every
// CTA keeps 64 KB in flight (the stages' count follows the box size), as v17 and v25 do.
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a benchmarks/probes/tma_row_width.cu -o /tmp/tma_row_width
//   /tmp/tma_row_width            -> one line per (row bytes, rows per box, CTAs per SM)
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

constexpr int kRingBytes = 64 * 1024;  // bytes in flight per CTA, whatever the box
constexpr int kAlign = 1024;

#define CHECK(call)                                                                   \
  do {                                                                                \
    cudaError_t status_ = (call);                                                     \
    if (status_ != cudaSuccess) {                                                     \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(status_)); \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

__device__ __forceinline__ uint32_t Smem(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void Wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// Each CTA streams `steps` boxes; box s starts at column block (hash(cta, s) % col_blocks) and
// row tile (cta % row_tiles), as a per-block tile walks one output column's entries.
__global__ void StreamBoxes(const __grid_constant__ CUtensorMap map, int stages, int steps,
                            int col_blocks,
                            int box_cols, int rows, int row_tiles, uint32_t box_bytes,
                            uint32_t stage_bytes, unsigned long long* sink) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t base = (Smem(smem_raw) + kAlign - 1) & ~uint32_t(kAlign - 1);
  const uint32_t full = base + stages * stage_bytes;
  const uint32_t empty = full + 8 * stages;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(full + 8 * s));
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(empty + 8 * s));
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  const int row0 = static_cast<int>(blockIdx.x % row_tiles) * rows;
  if (threadIdx.x == 32) {  // producer
    for (int s = 0; s < steps; ++s) {
      const int stage = s % stages;
      if (s >= stages) Wait(empty + 8 * stage, ((s - stages) / stages) & 1);
      const uint32_t hash = (blockIdx.x * 2654435761u) ^ (s * 40503u + 0x9e3779b9u);
      const int col = static_cast<int>(hash % col_blocks) * box_cols;
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(full + 8 * stage),
                   "r"(box_bytes)
                   : "memory");
      asm volatile(
          "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
          " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(base + stage * stage_bytes),
          "l"(reinterpret_cast<uint64_t>(&map)), "r"(col), "r"(row0), "r"(full + 8 * stage)
          : "memory");
    }
  } else if (threadIdx.x == 0) {  // consumer: release each stage as soon as it lands
    unsigned long long touched = 0;
    for (int s = 0; s < steps; ++s) {
      const int stage = s % stages;
      Wait(full + 8 * stage, (s / stages) & 1);
      touched += *reinterpret_cast<volatile unsigned char*>(smem_raw + (base - Smem(smem_raw)) +
                                                           stage * stage_bytes);
      asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(empty + 8 * stage) : "memory");
    }
    if (touched == 0xFFFFFFFFFFFFFFFFull) *sink = touched;  // keeps the reads
  }
}

PFN_cuTensorMapEncodeTiled_v12000 Encoder() {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found;
  CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found));
  return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
}

}  // namespace

int main() {
  // x: 2048 rows x 4096 bf16 columns, 16 MB: resident in the 50 MB L2 after the first pass.
  const uint64_t kRows = 2048, kCols = 4096;
  void* x = nullptr;
  CHECK(cudaMalloc(&x, kRows * kCols * 2));
  CHECK(cudaMemset(x, 1, kRows * kCols * 2));
  unsigned long long* sink = nullptr;
  CHECK(cudaMalloc(&sink, 8));
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs; x %llu x %llu bf16 (L2-resident); %d KB in flight per CTA\n",
              prop.name, sms, (unsigned long long)kRows, (unsigned long long)kCols,
              kRingBytes / 1024);
  const auto encode = Encoder();
  const int row_bytes_list[] = {16, 32, 64, 128};
  const int rows_list[] = {64, 256};
  const int ctas_per_sm_list[] = {1, 3};
  for (int row_bytes : row_bytes_list) {
    for (int rows : rows_list) {
      for (int ctas_per_sm : ctas_per_sm_list) {
        const int box_cols = row_bytes / 2;
        CUtensorMap map;
        const cuuint64_t dims[2] = {kCols, kRows};
        const cuuint64_t strides[1] = {kCols * 2};
        const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(rows)};
        const cuuint32_t element_strides[2] = {1, 1};
        const CUtensorMapSwizzle swizzle = row_bytes == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                           : row_bytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                           : row_bytes == 32 ? CU_TENSOR_MAP_SWIZZLE_32B
                                                             : CU_TENSOR_MAP_SWIZZLE_NONE;
        if (encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, x, dims, strides, box,
                   element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                   CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                   CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS) {
          std::printf("row %3d B x %3d rows: tensor map rejected\n", row_bytes, rows);
          continue;
        }
        const uint32_t box_bytes = static_cast<uint32_t>(row_bytes * rows);
        const uint32_t stage_bytes = (box_bytes + kAlign - 1) / kAlign * kAlign;
        const int stages = static_cast<int>(kRingBytes / stage_bytes) < 2
                               ? 2
                               : static_cast<int>(kRingBytes / stage_bytes) > 32
                                     ? 32
                                     : static_cast<int>(kRingBytes / stage_bytes);
        const int smem = kAlign + stages * stage_bytes + 16 * stages;
        CHECK(cudaFuncSetAttribute(StreamBoxes, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        const int ctas = sms * ctas_per_sm;
        // The same bytes per run whatever the box: 1 GB (~150 us at 7 TB/s).
        const int steps = static_cast<int>((1ull << 30) / box_bytes / ctas);
        const int row_tiles = static_cast<int>(kRows / rows);
        const int col_blocks = static_cast<int>(kCols / box_cols);
        cudaEvent_t start, stop;
        CHECK(cudaEventCreate(&start));
        CHECK(cudaEventCreate(&stop));
        float best_ms = 1e30f;
        for (int rep = 0; rep < 6; ++rep) {
          CHECK(cudaEventRecord(start));
          StreamBoxes<<<ctas, 64, smem>>>(map, stages, steps, col_blocks, box_cols, rows, row_tiles,
                                          box_bytes, stage_bytes, sink);
          CHECK(cudaEventRecord(stop));
          CHECK(cudaEventSynchronize(stop));
          CHECK(cudaGetLastError());
          float ms = 0;
          CHECK(cudaEventElapsedTime(&ms, start, stop));
          if (rep > 0 && ms < best_ms) best_ms = ms;  // the first pass fills L2
        }
        const double bytes = double(box_bytes) * steps * ctas;
        std::printf("row %3d B x %3d rows, %d CTAs/SM (%5d B boxes): %7.2f TB/s, %6.2f G rows/s\n",
                    row_bytes, rows, ctas_per_sm, box_bytes, bytes / (best_ms * 1e-3) / 1e12,
                    bytes / row_bytes / (best_ms * 1e-3) / 1e9);
        CHECK(cudaEventDestroy(start));
        CHECK(cudaEventDestroy(stop));
      }
    }
  }
  return 0;
}
