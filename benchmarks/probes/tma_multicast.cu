// How much does TMA multicast over a thread-block cluster deliver into each SM's shared memory?
//
// The large-batch targets (wide, small) need each x tile read from L2 once for several CTAs
// (benchmarks/NOTES.md, "What x reuse can buy" and the v24 plan). Whether that pays depends on
// two rates nobody has measured here: the bytes each SM can take in when its boxes come from a
// cluster peer's multicast, and whether v25's bound (~0.45 box rows per cycle per SM, the
// row-width probe's question) is paid per issuing SM or per receiving one. This probe streams
// boxes of `rows` x `row_bytes` from an L2-resident x through a ring of mbarrier stages, as
// tma_row_width.cu does, but in clusters of `cl` CTAs: every CTA of a cluster issues 1 / cl of
// each box's rows with `.multicast::cluster`, so every CTA receives the whole box while L2 is
// read once per cluster. A stage is refilled only when all the cluster's consumers have
// released it (each consumer arrives on the empty barrier of every CTA: remote arrivals through
// `mapa`), which is the protocol a multicast kernel needs. No math: the consumer releases each
// stage as soon as it lands.
//
// It prints, per (row bytes, rows, cluster size, CTAs per SM): L2 bytes read per second and the
// bytes delivered into shared memory per second and per SM cycle. cl = 1 is the plain stream.
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a benchmarks/probes/tma_multicast.cu -o /tmp/tma_multicast
//   /tmp/tma_multicast
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

constexpr int kRingBytes = 64 * 1024;  // bytes in flight per CTA, whatever the box
constexpr int kAlign = 1024;

#define CHECK(call)                                                                       \
  do {                                                                                    \
    cudaError_t status_ = (call);                                                         \
    if (status_ != cudaSuccess) {                                                         \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(status_)); \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

__device__ __forceinline__ uint32_t Smem(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ uint32_t ClusterRank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}

// Every thread of every CTA of the cluster: release this CTA's earlier writes (the barriers'
// initialisation) to the cluster, and wait for all the others'.
__device__ __forceinline__ void ClusterSync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
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

// One arrival on the barrier at the same shared-memory offset in cluster CTA `rank`.
__device__ __forceinline__ void ArriveRemote(uint32_t bar, uint32_t rank) {
  asm volatile(
      "{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n}\n" ::"r"(bar),
      "r"(rank)
      : "memory");
}

// Each cluster streams `steps` boxes; box s starts at column block hash(cluster, s) and row
// tile (cluster % row_tiles), as a per-block tile walks one output column's entries. CTA r of
// the cluster loads rows [r * slice_rows, (r + 1) * slice_rows) of the box into every CTA.
__global__ void StreamBoxes(const __grid_constant__ CUtensorMap map, int cluster, int stages,
                            int steps, int col_blocks, int box_cols, int rows, int row_tiles,
                            uint32_t box_bytes, uint32_t stage_bytes, unsigned long long* sink) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t base = (Smem(smem_raw) + kAlign - 1) & ~uint32_t(kAlign - 1);
  const uint32_t full = base + stages * stage_bytes;
  const uint32_t empty = full + 8 * stages;
  const uint32_t rank = cluster > 1 ? ClusterRank() : 0;
  const uint32_t cluster_id = blockIdx.x / cluster;
  const int slice_rows = rows / cluster;
  const uint32_t slice_bytes = box_bytes / cluster;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      // full: this CTA's own expect_tx arrival plus the whole box's bytes, from every slice;
      // empty: one release from each of the cluster's consumers.
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(full + 8 * s));
      asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(empty + 8 * s), "r"(cluster));
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  // No peer may signal a barrier of this CTA before it is initialised.
  __syncwarp();
  if (cluster > 1) ClusterSync(); else __syncthreads();
  const int row0 = static_cast<int>(cluster_id % row_tiles) * rows + static_cast<int>(rank) * slice_rows;
  const uint16_t everyone = static_cast<uint16_t>((1u << cluster) - 1);
  if (threadIdx.x == 32) {  // producer
    for (int s = 0; s < steps; ++s) {
      const int stage = s % stages;
      // Stage s is free in every CTA of the cluster once this CTA's empty barrier has every
      // consumer's release: the slice lands in all of them.
      if (s >= stages) Wait(empty + 8 * stage, ((s - stages) / stages) & 1);
      const uint32_t hash = (cluster_id * 2654435761u) ^ (s * 40503u + 0x9e3779b9u);
      const int col = static_cast<int>(hash % col_blocks) * box_cols;
      const uint32_t bar = full + 8 * stage;
      const uint32_t dst = base + stage * stage_bytes + rank * slice_bytes;
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar),
                   "r"(box_bytes)
                   : "memory");
      if (cluster > 1) {
        asm volatile(
            "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
            ".multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
            "l"(reinterpret_cast<uint64_t>(&map)), "r"(col), "r"(row0), "r"(bar), "h"(everyone)
            : "memory");
      } else {
        asm volatile(
            "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
            " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
            "l"(reinterpret_cast<uint64_t>(&map)), "r"(col), "r"(row0), "r"(bar)
            : "memory");
      }
    }
  } else if (threadIdx.x == 0) {  // consumer: release each stage as soon as it lands
    unsigned long long touched = 0;
    for (int s = 0; s < steps; ++s) {
      const int stage = s % stages;
      Wait(full + 8 * stage, (s / stages) & 1);
      touched += *reinterpret_cast<volatile unsigned char*>(smem_raw + (base - Smem(smem_raw)) +
                                                           stage * stage_bytes);
      if (cluster > 1) {
        for (int peer = 0; peer < cluster; ++peer) ArriveRemote(empty + 8 * stage, peer);
      } else {
        asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(empty + 8 * stage)
                     : "memory");
      }
    }
    if (touched == 0xFFFFFFFFFFFFFFFFull) *sink = touched;  // keeps the reads
  }
  // No CTA may leave while a peer can still write its shared memory or arrive on its barriers.
  __syncwarp();
  if (cluster > 1) ClusterSync();
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
  int clock_khz = 0;
  CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs at %.2f GHz (max); x %llu x %llu bf16 (L2-resident); %d KB in flight "
              "per CTA\n",
              prop.name, sms, clock_khz * 1e-6, (unsigned long long)kRows,
              (unsigned long long)kCols, kRingBytes / 1024);
  std::printf("columns: L2 read TB/s | delivered to shared memory TB/s, B per SM cycle | "
              "delivered G rows/s\n");
  const auto encode = Encoder();
  const int row_bytes_list[] = {32, 64, 128};
  const int clusters[] = {1, 2, 4};
  const int ctas_per_sm_list[] = {1, 2};
  const int rows = 128;
  for (int row_bytes : row_bytes_list) {
    for (int cluster : clusters) {
      const int slice_rows = rows / cluster;
      const int box_cols = row_bytes / 2;
      CUtensorMap map;
      const cuuint64_t dims[2] = {kCols, kRows};
      const cuuint64_t strides[1] = {kCols * 2};
      const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_cols),
                                 static_cast<cuuint32_t>(slice_rows)};
      const cuuint32_t element_strides[2] = {1, 1};
      const CUtensorMapSwizzle swizzle = row_bytes == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                         : row_bytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                                           : CU_TENSOR_MAP_SWIZZLE_32B;
      if (encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, x, dims, strides, box,
                 element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                 CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS) {
        std::printf("row %3d B, cluster %d: tensor map rejected\n", row_bytes, cluster);
        continue;
      }
      const uint32_t box_bytes = static_cast<uint32_t>(row_bytes * rows);
      // A slice must start on a swizzle atom (8 rows): 128 rows / 4 = 32 rows does.
      const uint32_t stage_bytes = (box_bytes + kAlign - 1) / kAlign * kAlign;
      int stages = static_cast<int>(kRingBytes / stage_bytes);
      stages = stages < 2 ? 2 : stages > 32 ? 32 : stages;
      const int smem = kAlign + stages * stage_bytes + 16 * stages;
      CHECK(cudaFuncSetAttribute(StreamBoxes, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      if (cluster > 2) {
        CHECK(cudaFuncSetAttribute(StreamBoxes, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
      }
      for (int ctas_per_sm : ctas_per_sm_list) {
        cudaLaunchConfig_t config = {};
        config.gridDim = dim3(sms * ctas_per_sm / cluster * cluster);
        config.blockDim = dim3(64);
        config.dynamicSmemBytes = smem;
        cudaLaunchAttribute attribute;
        attribute.id = cudaLaunchAttributeClusterDimension;
        attribute.val.clusterDim.x = cluster;
        attribute.val.clusterDim.y = 1;
        attribute.val.clusterDim.z = 1;
        config.attrs = &attribute;
        config.numAttrs = 1;
        int active_clusters = 0;
        if (cudaOccupancyMaxActiveClusters(&active_clusters, StreamBoxes, &config) != cudaSuccess) {
          active_clusters = 0;
          cudaGetLastError();
        }
        // One wave: as many clusters as fit at once (GPCs of 16-18 SMs leave some SMs out of
        // clusters of 4), so that no CTA waits for another's SM.
        int ctas = sms * ctas_per_sm / cluster * cluster;
        if (active_clusters > 0 && active_clusters * cluster < ctas) ctas = active_clusters * cluster;
        const double sms_used = double(ctas) / ctas_per_sm;
        config.gridDim = dim3(ctas);
        // The same bytes delivered per run whatever the box: 2 GB (~150-300 us).
        const int steps = static_cast<int>((2ull << 30) / box_bytes / ctas);
        const int row_tiles = static_cast<int>(kRows / rows);
        const int col_blocks = static_cast<int>(kCols / box_cols);
        cudaEvent_t start, stop;
        CHECK(cudaEventCreate(&start));
        CHECK(cudaEventCreate(&stop));
        float best_ms = 1e30f;
        bool failed = false;
        for (int rep = 0; rep < 6 && !failed; ++rep) {
          CHECK(cudaEventRecord(start));
          const cudaError_t launched =
              cudaLaunchKernelEx(&config, StreamBoxes, map, cluster, stages, steps, col_blocks,
                                 box_cols, rows, row_tiles, box_bytes, stage_bytes, sink);
          CHECK(cudaEventRecord(stop));
          CHECK(cudaEventSynchronize(stop));
          if (launched != cudaSuccess || cudaGetLastError() != cudaSuccess) {
            std::printf("row %3d B, cluster %d, %d CTAs/SM: launch failed (%s)\n", row_bytes,
                        cluster, ctas_per_sm, cudaGetErrorString(launched));
            failed = true;
            break;
          }
          float ms = 0;
          CHECK(cudaEventElapsedTime(&ms, start, stop));
          if (rep > 0 && ms < best_ms) best_ms = ms;  // the first pass fills L2
        }
        if (!failed) {
          const double seconds = best_ms * 1e-3;
          const double delivered = double(box_bytes) * steps * ctas;
          const double read = delivered / cluster;
          const double per_sm_cycle = delivered / seconds / sms_used / (clock_khz * 1e3);
          std::printf("row %3d B x %3d rows, cluster %d, %d CTAs/SM (%4d CTAs): L2 %6.2f TB/s "
                      "| in %6.2f TB/s, %6.1f B/SM/cycle | %6.2f G rows/s\n",
                      row_bytes, rows, cluster, ctas_per_sm, ctas, read / seconds / 1e12,
                      delivered / seconds / 1e12, per_sm_cycle,
                      delivered / row_bytes / seconds / 1e9);
        }
        CHECK(cudaEventDestroy(start));
        CHECK(cudaEventDestroy(stop));
      }
    }
  }
  return 0;
}
