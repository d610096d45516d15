// How fast do TMA boxes stream from L2 into shared memory: by the width of a box row, and when
// a thread-block cluster shares each box by multicast?
//
// Two questions from benchmarks/NOTES.md. Row width (session 11): v25 (bs 16, 32-byte box rows)
// moved its bytes at half the rate of v17 (bs 32, 64-byte rows) on the same H100; if a box row
// costs one request whatever its width, 128-byte rows (x stored transposed, v26) would double
// v17's rate as well. Multicast (session 12): the wide and small targets need each x box read
// from L2 once for several CTAs (v24 `cluster_union`); that pays only if each SM can take in
// what its peers send, and only if v25's bound is paid per issuing SM, not per receiving one.
//
// Each CTA streams boxes of `rows` x `row_bytes` from an L2-resident x through a ring of
// mbarrier stages (64 KB in flight per CTA, as v17 and v25 keep), with no math: the consumer
// releases each stage as soon as it lands. Box origins follow a pseudo-random block-row order,
// as the kernels' do. In clusters of cl > 1 every CTA issues 1 / cl of each box's rows with
// `.multicast::cluster`, so every CTA receives the whole box while L2 is read once per cluster;
// a stage is refilled only when every consumer of the cluster has released it (each consumer
// arrives on the empty barrier of every CTA), the protocol of v24. One wave: as many clusters
// as the device holds at once. The device code is the library's (xla_ffi/cuda/hopper_tma.cuh).
//
// One line per case: L2 bytes read per second, bytes delivered into shared memory per second
// and per SM cycle, and box rows delivered per second.
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I xla_ffi/cuda \
//       benchmarks/probes/tma_stream.cu -o /tmp/tma_stream && /tmp/tma_stream
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "hopper_tma.cuh"

namespace {

namespace tma = jbs::tma;

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

// Cluster `cluster_id` streams `steps` boxes; box s starts at column block hash(cluster, s) and
// row tile (cluster % row_tiles), as a per-block tile walks one output column's entries. CTA r
// of a cluster loads rows [r * rows / cl, (r + 1) * rows / cl) of each box into every CTA.
__global__ void StreamBoxes(const __grid_constant__ CUtensorMap map, int cluster, int stages,
                            int steps, int col_blocks, int box_cols, int rows, int row_tiles,
                            uint32_t box_bytes, uint32_t stage_bytes, unsigned long long* sink) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t base = (raw + kAlign - 1) & ~uint32_t(kAlign - 1);
  const uint32_t full = base + stages * stage_bytes;
  const uint32_t empty = full + 8 * stages;
  const uint32_t rank = cluster > 1 ? tma::ClusterCtaRank() : 0;
  const uint32_t cluster_id = blockIdx.x / cluster;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      // full: this CTA's own expect_tx arrival plus the whole box's bytes, from every slice;
      // empty: one release from each of the cluster's consumers.
      tma::MbarrierInit(full + 8 * s, 1);
      tma::MbarrierInit(empty + 8 * s, cluster);
    }
    tma::FenceMbarrierInit();
  }
  // No peer may signal a barrier of this CTA before it is initialised.
  if (cluster > 1) tma::ClusterSync(); else __syncthreads();
  const int slice_rows = rows / cluster;
  const int32_t row0 =
      static_cast<int32_t>(cluster_id % row_tiles) * rows + static_cast<int32_t>(rank) * slice_rows;
  const uint16_t everyone = static_cast<uint16_t>((1u << cluster) - 1);
  if (threadIdx.x == 32) {  // producer
    for (int s = 0; s < steps; ++s) {
      const int stage = s % stages;
      // The slice lands in every CTA of the cluster: stage s must be free in all of them, which
      // this CTA's empty barrier says once it has every consumer's release.
      if (s >= stages) tma::MbarrierWaitOrTrap(empty + 8 * stage, ((s - stages) / stages) & 1);
      const uint32_t hash = (cluster_id * 2654435761u) ^ (s * 40503u + 0x9e3779b9u);
      const int32_t col = static_cast<int32_t>(hash % col_blocks) * box_cols;
      const uint32_t bar = full + 8 * stage;
      const uint32_t dst = base + stage * stage_bytes + rank * (box_bytes / cluster);
      tma::MbarrierArriveExpectTx(bar, box_bytes);
      if (cluster > 1) {
        tma::Load3DMulticast(dst, &map, bar, col, row0, 0, everyone);
      } else {
        tma::Load3D(dst, &map, bar, col, row0, 0);
      }
    }
  } else if (threadIdx.x == 0) {  // consumer: release each stage as soon as it lands
    unsigned long long touched = 0;
    for (int s = 0; s < steps; ++s) {
      const int stage = s % stages;
      tma::MbarrierWaitOrTrap(full + 8 * stage, (s / stages) & 1);
      touched += *reinterpret_cast<volatile unsigned char*>(smem_raw + (base - raw) +
                                                           stage * stage_bytes);
      if (cluster > 1) {
        for (int peer = 0; peer < cluster; ++peer) {
          tma::MbarrierArriveCluster(empty + 8 * stage, static_cast<uint32_t>(peer));
        }
      } else {
        tma::MbarrierArrive(empty + 8 * stage);
      }
    }
    if (touched == 0xFFFFFFFFFFFFFFFFull) *sink = touched;  // keeps the reads
  }
  // No CTA may leave while a peer can still write its shared memory or arrive on its barriers.
  if (cluster > 1) tma::ClusterSync();
}

PFN_cuTensorMapEncodeTiled_v12000 Encoder() {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found;
  CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found));
  return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
}

struct Case {
  int row_bytes;
  int rows;  // per box
  int cluster;
  int ctas_per_sm;
};

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
  // Row width alone (cl 1: 64 and 256-row boxes, 1 and 3 CTAs per SM as v25 and v17 run), then
  // the multicast sweep (128-row boxes, cl 1 as its baseline, 2 and 4).
  Case cases[64];
  int count = 0;
  for (int row_bytes : {16, 32, 64, 128})
    for (int rows : {64, 256})
      for (int ctas_per_sm : {1, 3}) cases[count++] = {row_bytes, rows, 1, ctas_per_sm};
  for (int row_bytes : {32, 64, 128})
    for (int cluster : {1, 2, 4})
      for (int ctas_per_sm : {1, 2}) cases[count++] = {row_bytes, 128, cluster, ctas_per_sm};
  const auto encode = Encoder();
  CHECK(cudaFuncSetAttribute(StreamBoxes, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  for (int i = 0; i < count; ++i) {
    const Case c = cases[i];
    const int box_cols = c.row_bytes / 2;
    const int slice_rows = c.rows / c.cluster;
    CUtensorMap map;
    const cuuint64_t dims[3] = {kCols, kRows, 1};
    const cuuint64_t strides[2] = {kCols * 2, kRows * kCols * 2};
    const cuuint32_t box[3] = {static_cast<cuuint32_t>(box_cols),
                               static_cast<cuuint32_t>(slice_rows), 1};
    const cuuint32_t element_strides[3] = {1, 1, 1};
    const CUtensorMapSwizzle swizzle = c.row_bytes == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                       : c.row_bytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                       : c.row_bytes == 32 ? CU_TENSOR_MAP_SWIZZLE_32B
                                                           : CU_TENSOR_MAP_SWIZZLE_NONE;
    std::printf("row %3d B x %3d rows, cluster %d, %d CTAs/SM: ", c.row_bytes, c.rows, c.cluster,
                c.ctas_per_sm);
    if (encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, x, dims, strides, box, element_strides,
               CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS) {
      std::printf("tensor map rejected\n");
      continue;
    }
    const uint32_t box_bytes = static_cast<uint32_t>(c.row_bytes * c.rows);
    // A slice starts on a swizzle atom (8 rows): 128 rows / 4 = 32 rows does.
    const uint32_t stage_bytes = (box_bytes + kAlign - 1) / kAlign * kAlign;
    int stages = static_cast<int>(kRingBytes / stage_bytes);
    stages = stages < 2 ? 2 : stages > 32 ? 32 : stages;
    const int smem = kAlign + stages * stage_bytes + 16 * stages;
    CHECK(cudaFuncSetAttribute(StreamBoxes, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(sms * c.ctas_per_sm / c.cluster * c.cluster);
    config.blockDim = dim3(64);
    config.dynamicSmemBytes = smem;
    cudaLaunchAttribute attribute;
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = c.cluster;
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
    int active_clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&active_clusters, StreamBoxes, &config) != cudaSuccess) {
      active_clusters = 0;
      (void)cudaGetLastError();
    }
    // One wave: as many clusters as fit at once (GPCs of 16-18 SMs leave some SMs out of
    // clusters of 4), so that no CTA waits for another's SM.
    int ctas = static_cast<int>(config.gridDim.x);
    if (active_clusters > 0 && active_clusters * c.cluster < ctas) ctas = active_clusters * c.cluster;
    config.gridDim = dim3(ctas);
    const double sms_used = static_cast<double>(ctas) / c.ctas_per_sm;
    // The same bytes delivered per run whatever the case: 2 GB (~150-300 us).
    const int steps = static_cast<int>((2ull << 30) / box_bytes / ctas);
    const int row_tiles = static_cast<int>(kRows / c.rows);
    const int col_blocks = static_cast<int>(kCols / box_cols);
    cudaEvent_t start, stop;
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
    float best_ms = 1e30f;
    cudaError_t launched = cudaSuccess;
    for (int rep = 0; rep < 6 && launched == cudaSuccess; ++rep) {
      CHECK(cudaEventRecord(start));
      launched = cudaLaunchKernelEx(&config, StreamBoxes, map, c.cluster, stages, steps,
                                    col_blocks, box_cols, c.rows, row_tiles, box_bytes,
                                    stage_bytes, sink);
      CHECK(cudaEventRecord(stop));
      CHECK(cudaEventSynchronize(stop));
      if (launched == cudaSuccess) launched = cudaGetLastError();
      float ms = 0;
      CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (rep > 0 && ms < best_ms) best_ms = ms;  // the first pass fills L2
    }
    if (launched != cudaSuccess) {
      std::printf("launch failed (%s)\n", cudaGetErrorString(launched));
    } else {
      const double seconds = best_ms * 1e-3;
      const double delivered = static_cast<double>(box_bytes) * steps * ctas;
      std::printf("%4d CTAs: L2 %6.2f TB/s | in %6.2f TB/s, %6.1f B/SM/cycle | %6.2f G rows/s\n",
                  ctas, delivered / c.cluster / seconds / 1e12, delivered / seconds / 1e12,
                  delivered / seconds / sms_used / (clock_khz * 1e3),
                  delivered / c.row_bytes / seconds / 1e9);
    }
    CHECK(cudaEventDestroy(start));
    CHECK(cudaEventDestroy(stop));
  }
  return 0;
}
