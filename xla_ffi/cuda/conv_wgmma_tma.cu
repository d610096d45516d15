// Stride-1 block-sparse convolution on sm_90a: TMA boxes and wgmma (experiment
// `wgmma_tma_conv`, benchmarks/NOTES.md v21), jbs_conv forward and input gradient, 16-bit,
// bs 32.
//
// Why: the halo-tile kernel (conv_halo_tensor_core.cu) multiplies with mma.sync and reaches
// ~165 TFLOP/s on the benchmark's convolution; the matmul measured 3x from moving the same kind
// of tile to TMA-fed wgmma (NOTES v17). A convolution's x tiles map onto TMA boxes directly:
// a tile of TH x TW output positions (TW a power of two, TH x TW = 256) reads, for tap
// (kd, kh, kw), the input positions (od + s_d(kd), oh + s_h(kh), ow + s_w(kw)), where
// s(t) = base + t * step per dimension ((-pad, +dilation) forward, (+pad, -dilation) for the
// input gradient). One box of TW x BH positions (BH = TH + (KH - 1) * dilation) at the
// (kd, kw) shifts holds every kh tap's window: tap kh's is the box from row
// (s_h(kh) - min_kh s_h) * TW on, a multiple of 8 rows, so each window is a whole number of
// 64-byte-swizzle atoms and wgmma reads it through a descriptor as it reads the matmul's x
// tile. Padding is the TMA's zero fill for coordinates outside the tensor, negative ones
// included; a step whose box lies wholly outside the source is skipped (StepBoxSource). x
// crosses L2 KD x KW times per input block (the halo kernel: once), against the
// KD x KH x KW of a per-tap gather.
//
// Roles as in the matmul's TMA kernel (bsmm_wgmma_tma_kernel.cuh): a producer lane issues,
// per step (entry, kd, kw), the x box and the KH w blocks of those taps into one stage of a
// 4-stage ring, completing its "full" mbarrier; two consumer warpgroups (two m64 slabs of
// positions each) wait on it, issue 4 wgmma m64n32k16 per kh tap, retire the previous step
// (wait_group 1) and release its stage on the "empty" mbarrier.
//
// Determinism: every output element is summed by one thread's accumulators, in entry order,
// then kd, kw, kh, then channels. No atomics.
#include "conv_wgmma_tma.h"

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>

#include "bsmm_tc_common.cuh"
#include "bsmm_wgmma_common.cuh"
#include "hopper_tma.cuh"
#include "launch_util.h"
#include "tensor_core.cuh"
#include "wgmma.cuh"

namespace jbs {
namespace bsmm_tc {
namespace {

constexpr int kBs = 32;
constexpr int kConsumerThreads = 256;                // two warpgroups
constexpr int kThreads = kConsumerThreads + 32;      // and one producer warp
constexpr int kSlabs = 2;                            // m64 slabs per warpgroup
constexpr int kTilePositions = 64 * kSlabs * 2;      // 256
constexpr uint32_t kRowBytes = kBs * 2;              // 64: one swizzle row
[[maybe_unused]] constexpr uint32_t kAtomBytes = 8 * kRowBytes;  // 512
constexpr uint32_t kBlockBytes = kBs * kRowBytes;    // 2 KB: one w block
constexpr int kStages = 4;
constexpr uint32_t kAlign = 1024;
constexpr int kMaxSmemBytes = 227 * 1024;

struct ConvTmaGeometry {
  int32_t a_spatial[3];    // (Da, Ha, Wa): the source extents
  int32_t out_spatial[3];  // (Do, Ho, Wo)
  int32_t kernel[3];       // (KD, KH, KW)
  int32_t base[3];         // source offset of tap 0 per dimension
  int32_t step[3];         // source offset per tap index
  int32_t box_h0;          // source row of the x box's first row, relative to the tile's oh0
  int32_t box_h;           // BH = TH + (KH - 1) x dilation: rows of TW positions per x box
  int32_t tile_w_log2;     // TW = 1 << tile_w_log2 output positions per tile row
  int32_t tile_h;          // TH = 256 / TW
  int32_t tiles_w;         // ceil(Wo / TW)
  int32_t tiles_h;         // ceil(Ho / TH)
  int32_t batch;           // images per group
  int32_t taps;            // KD x KH x KW
  uint32_t x_box_bytes;    // TW x BH x 64: what the x box delivers
  uint32_t x_slot_bytes;   // the same, rounded up to 1 KB: where the w blocks start
  uint32_t stage_bytes;    // x slot + KH w blocks
};

// (image, depth, tile row, tile column) of a group's tile index.
struct TileOrigin {
  int32_t n, od, oh0, ow0;
};

[[maybe_unused]] __device__ __forceinline__ TileOrigin DecomposeTile(const ConvTmaGeometry& geo,
                                                                     int64_t tile) {
  TileOrigin origin;
  const int32_t tw = static_cast<int32_t>(tile % geo.tiles_w);
  int64_t rest = tile / geo.tiles_w;
  const int32_t th = static_cast<int32_t>(rest % geo.tiles_h);
  rest /= geo.tiles_h;
  origin.od = static_cast<int32_t>(rest % geo.out_spatial[0]);
  origin.n = static_cast<int32_t>(rest / geo.out_spatial[0]);
  origin.oh0 = th * geo.tile_h;
  origin.ow0 = tw << geo.tile_w_log2;
  return origin;
}

// Where step (kd, kw) of the tile at `origin` reads its x box: the source coordinates of the
// box's first position, and whether any of the box lies inside the source. A box wholly in the
// padding (a depth tap past the volume, say) contributes nothing: the producer loads an
// in-range dummy box instead and the consumers skip the step's wgmma, so no TMA box is ever
// wholly out of bounds.
struct BoxSource {
  int32_t w, h, d;
  bool any_inside;
};

[[maybe_unused]] __device__ __forceinline__ BoxSource StepBoxSource(const ConvTmaGeometry& geo,
                                                                    const TileOrigin& origin,
                                                                    int kd, int kw) {
  BoxSource box;
  box.w = origin.ow0 + geo.base[2] + kw * geo.step[2];
  box.h = origin.oh0 + geo.box_h0;
  box.d = origin.od + geo.base[0] + kd * geo.step[0];
  box.any_inside = box.d >= 0 && box.d < geo.a_spatial[0] && box.h < geo.a_spatial[1] &&
                   box.h + geo.box_h > 0 && box.w < geo.a_spatial[2] &&
                   box.w + (1 << geo.tile_w_log2) > 0;
  return box;
}

// kKernelH (KH) is a template argument so that a step's wgmma, all kh taps, form one unrolled
// hardware batch: with a run-time kh loop ptxas closes a batch per iteration, and the commit
// becomes a batch of its own that a wait_group 1 leaves pending while it retires the whole step.
template <typename Elem, bool kTransW, int kKernelH>
__global__ void __launch_bounds__(kThreads, 2)
    ConvWgmmaTmaKernel(BsmmArgs args, const __grid_constant__ CUtensorMap x_map,
                       const __grid_constant__ CUtensorMap w_map, ConvTmaGeometry geo,
                       int64_t tiles, bool out_f32) {
  // Only the sm_90a image holds the kernel; the others (never launched: WgmmaAvailable) keep
  // a stub.
#if JBS_WGMMA_DEVICE
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw_base = tc::SharedAddress(smem_raw);
  const uint32_t smem_base = (raw_base + kAlign - 1) & ~(kAlign - 1);
  const uint32_t full_barriers = smem_base + kStages * geo.stage_bytes;
  const uint32_t empty_barriers = full_barriers + kStages * 8;

  const int kernel_d = geo.kernel[0];
  constexpr int kernel_h = kKernelH;
  const int kernel_w = geo.kernel[2];
  const int64_t steps_per_entry = static_cast<int64_t>(kernel_d) * kernel_w;

  const int tid = static_cast<int>(threadIdx.x);
  const int warpgroup = tid / 128;
  const int warp = (tid % 128) / 32;
  const int lane = tid & 31;

  const int64_t out_block = blockIdx.x;
  const ColumnEntries column = LoadColumnEntries(args, out_block);
  const int64_t entries_count = column.count;
  const int64_t steps = entries_count * steps_per_entry;
  const int2* entries = column.pairs;
  if (tid == 0) InitTmaRing(full_barriers, empty_barriers, kStages, kConsumerThreads);
  __syncthreads();  // the only CTA-wide barrier: the roles never meet again

  if (tid >= kConsumerThreads) {
    // Producer warp, one lane: every step of every tile, in the consumers' order, up to
    // kStages ahead of them. Step j waits for the consumers' release of step j - kStages.
    if (lane != 0) return;
    int64_t step = 0;
    for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
      for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
        const TileOrigin origin = DecomposeTile(geo, tile);
        const int32_t image = static_cast<int32_t>(g * geo.batch + origin.n);
        for (int64_t i = 0; i < entries_count; ++i) {
          const int2 pair = __ldg(entries + i);
          // A corrupt entry loads valid dummy boxes; the consumers skip its wgmma.
          const bool valid = column.Valid(pair);
          const int32_t channel = valid ? pair.x * kBs : 0;
          const int64_t first_tap_block = (valid ? static_cast<int64_t>(pair.y) : 0) * geo.taps;
          for (int kd = 0; kd < kernel_d; ++kd) {
            for (int kw = 0; kw < kernel_w; ++kw, ++step) {
              const int stage = static_cast<int>(step % kStages);
              if (step >= kStages) {
                tma::MbarrierWaitOrTrap(empty_barriers + 8 * stage,
                                        static_cast<uint32_t>(((step - kStages) / kStages) & 1));
              }
              const uint32_t full = full_barriers + 8 * stage;
              const uint32_t x_dst = smem_base + stage * geo.stage_bytes;
              const BoxSource box = StepBoxSource(geo, origin, kd, kw);
              tma::MbarrierArriveExpectTx(full, geo.x_box_bytes + kernel_h * kBlockBytes);
              if (box.any_inside) {
                tma::Load5D(x_dst, &x_map, full, channel, box.w, box.h, box.d, image);
              } else {
                tma::Load5D(x_dst, &x_map, full, channel, 0, 0, 0, image);
              }
              for (int kh = 0; kh < kernel_h; ++kh) {
                const int64_t tap = (static_cast<int64_t>(kd) * kernel_h + kh) * kernel_w + kw;
                tma::Load3D(x_dst + geo.x_slot_bytes + kh * kBlockBytes, &w_map, full, 0,
                            static_cast<int32_t>((first_tap_block + tap) * kBs),
                            static_cast<int32_t>(g));
              }
            }
          }
        }
      }
    }
    return;
  }

  // Descriptor strides (wgmma.cuh, DescriptorSwizzled64): the x window is K-major, a k16 step 32
  // bytes into the atom; a w block stored [n][k] (input gradient: applied transposed) is
  // K-major as well, one stored [k][n] (forward) MN-major, a k16 step two atoms.
  constexpr uint32_t kAStep = 32;
  constexpr uint32_t kBStep = kTransW ? 32 : 2 * kAtomBytes;
  constexpr uint32_t kBLeading = kTransW ? 16 : kBlockBytes;
  const int32_t tile_w = 1 << geo.tile_w_log2;
  const int64_t out_cols = args.out_blocks * kBs;
  const int32_t out_d = geo.out_spatial[0];
  const int32_t out_h = geo.out_spatial[1];
  const int32_t out_w = geo.out_spatial[2];

  int64_t base = 0;  // global number of this CTA's first step in the current tile
  for (int64_t g = blockIdx.z; g < args.groups; g += gridDim.z) {
    for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
      const TileOrigin origin = DecomposeTile(geo, tile);
      float acc[kSlabs][16];
#pragma unroll
      for (int s = 0; s < kSlabs; ++s)
#pragma unroll
        for (int i = 0; i < 16; ++i) acc[s][i] = 0.0f;

      int64_t i = 0;  // this tile's step
      for (int64_t e = 0; e < entries_count; ++e) {
        const bool valid = column.Valid(__ldg(entries + e));  // the same for every thread
        for (int64_t j = 0; j < steps_per_entry; ++j, ++i) {
          const int64_t step = base + i;
          const int stage = static_cast<int>(step % kStages);
          const bool inside = StepBoxSource(geo, origin, static_cast<int>(j / kernel_w),
                                            static_cast<int>(j % kernel_w))
                                  .any_inside;
          tma::MbarrierWaitOrTrap(full_barriers + 8 * stage,
                                  static_cast<uint32_t>((step / kStages) & 1));
          if (valid && inside) {
            const uint32_t x_stage = smem_base + stage * geo.stage_bytes;
#pragma unroll
            for (int s = 0; s < kSlabs; ++s) wg::FenceAccumulators(acc[s]);
            wg::WgmmaFence();
#pragma unroll
            for (int kh = 0; kh < kernel_h; ++kh) {
              // Tap kh's window: TW-position rows from (s_h(kh) - box_h0) on, whole atoms.
              const uint32_t window =
                  x_stage + static_cast<uint32_t>((geo.base[1] + kh * geo.step[1] - geo.box_h0)
                                                  << geo.tile_w_log2) * kRowBytes;
              const uint32_t block = x_stage + geo.x_slot_bytes + kh * kBlockBytes;
#pragma unroll
              for (int k16 = 0; k16 < kBs / 16; ++k16) {
                const uint64_t b_descriptor =
                    wg::DescriptorSwizzled64(block + k16 * kBStep, kBLeading, kAtomBytes);
#pragma unroll
                for (int s = 0; s < kSlabs; ++s) {
                  const uint32_t slab = (warpgroup * kSlabs + s) * 64 * kRowBytes;
                  wg::Wgmma64x32x16<Elem, kTransW ? 0 : 1>(
                      acc[s],
                      wg::DescriptorSwizzled64(window + slab + k16 * kAStep, 16, kAtomBytes),
                      b_descriptor);
                }
              }
            }
            wg::WgmmaCommit();
#pragma unroll
            for (int s = 0; s < kSlabs; ++s) wg::FenceAccumulators(acc[s]);
            wg::WgmmaWait<1>();
          } else {
            wg::WgmmaWait<0>();  // no group of this step: retire the previous one explicitly
          }
          // Step i - 1's wgmma have retired: release its stage to the producer.
          if (i >= 1) {
            tma::MbarrierArrive(empty_barriers + 8 * static_cast<int>((step - 1) % kStages));
          }
        }
      }
      wg::WgmmaWait<0>();
#pragma unroll
      for (int s = 0; s < kSlabs; ++s) wg::FenceAccumulators(acc[s]);
      if (steps > 0) {
        // The last step's release, so that every consumed step is released exactly once.
        tma::MbarrierArrive(empty_barriers + 8 * static_cast<int>((base + steps - 1) % kStages));
      }
      base += steps;

      const int64_t image_row0 =
          (g * geo.batch + origin.n) * out_d + origin.od;  // (group, image, depth) slice
#pragma unroll
      for (int s = 0; s < kSlabs; ++s) {
        const int position0 = (warpgroup * kSlabs + s) * 64 + warp * 16;
        StoreWgmmaWarpRows<Elem>(
            args.out, out_cols, acc[s],
            [&](int r) {
              const int position = position0 + r;
              const int32_t oh = origin.oh0 + (position >> geo.tile_w_log2);
              const int32_t ow = origin.ow0 + (position & (tile_w - 1));
              if (oh >= out_h || ow >= out_w) return int64_t{-1};
              return (image_row0 * out_h + oh) * out_w + ow;
            },
            out_block, lane, out_f32);
      }
    }
  }
#else
  __trap();
#endif
}

// The tile and box geometry, or false where this kernel does not take the convolution.
bool MakeConvTmaGeometry(const BsmmArgs& args, const ConvGather& conv, ConvTmaGeometry& geo) {
  int64_t out_positions = 1;
  int64_t a_positions = 1;
  for (int d = 0; d < 3; ++d) {
    if (conv.stride[d] != 1 || conv.kernel[d] < 1 || conv.out_spatial[d] < 1 ||
        conv.a_spatial[d] < 1 || conv.dilation[d] < 1) {
      return false;
    }
    geo.a_spatial[d] = conv.a_spatial[d];
    geo.out_spatial[d] = conv.out_spatial[d];
    geo.kernel[d] = conv.kernel[d];
    geo.base[d] = conv.transposed ? conv.pad_lo[d] : -conv.pad_lo[d];
    geo.step[d] = conv.transposed ? -conv.dilation[d] : conv.dilation[d];
    out_positions *= conv.out_spatial[d];
    a_positions *= conv.a_spatial[d];
  }
  // KH: the instantiated kernel heights (Launch).
  if ((conv.kernel[1] != 1 && conv.kernel[1] != 3 && conv.kernel[1] != 5) ||
      conv.taps != conv.kernel[0] * conv.kernel[1] * conv.kernel[2] ||
      args.rows % out_positions != 0) {
    return false;
  }
  const int64_t batch = args.rows / out_positions;
  if (batch * a_positions != args.a_rows || batch * args.groups > INT32_MAX) return false;
  geo.batch = static_cast<int32_t>(batch);
  geo.taps = conv.taps;
  geo.box_h0 = geo.base[1] + std::min(0, (conv.kernel[1] - 1) * geo.step[1]);
  // The narrowest power-of-two tile row (>= 8 positions: whole swizzle atoms) that covers an
  // output row, up to the whole tile.
  int log2 = 3;
  while ((1 << log2) < conv.out_spatial[2] && (1 << log2) < kTilePositions) ++log2;
  const int tile_w = 1 << log2;
  geo.tile_w_log2 = log2;
  geo.tile_h = kTilePositions / tile_w;
  geo.tiles_w = (conv.out_spatial[2] + tile_w - 1) / tile_w;
  geo.tiles_h = (conv.out_spatial[1] + geo.tile_h - 1) / geo.tile_h;
  // Tiles mostly past the output (short rows of few of them: 1-D, or tiny images) waste the
  // tensor cores; the halo kernel takes those.
  const int64_t tile_positions =
      static_cast<int64_t>(geo.tiles_w) * geo.tiles_h * kTilePositions;
  if (2 * static_cast<int64_t>(conv.out_spatial[1]) * conv.out_spatial[2] < tile_positions) {
    return false;
  }
  const int64_t box_h = geo.tile_h + static_cast<int64_t>(conv.kernel[1] - 1) * conv.dilation[1];
  if (box_h > 256) return false;
  geo.box_h = static_cast<int32_t>(box_h);
  geo.x_box_bytes = static_cast<uint32_t>(tile_w * box_h * kRowBytes);
  geo.x_slot_bytes = (geo.x_box_bytes + kAlign - 1) & ~(kAlign - 1);
  geo.stage_bytes = geo.x_slot_bytes + conv.kernel[1] * kBlockBytes;
  return kAlign + kStages * (geo.stage_bytes + 16) <= static_cast<uint32_t>(kMaxSmemBytes);
}

template <MmaKind kKind, bool kTransW, int kKernelH>
cudaError_t LaunchHeight(const BsmmArgs& args, const ConvGather& conv, const ConvTmaGeometry& geo,
                   bool out_f32, cudaStream_t stream) {
  using Elem = ElemOf<kKind>;
  CUtensorMap x_map;
  CUtensorMap w_map;
  {
    // x as (images of all groups, Da, Ha, Wa, channels), innermost first; a box is one input
    // block's 32 channels x TW x BH positions of one depth slice. Coordinates outside the
    // tensor (padding) read as zeros.
    const uint64_t c = static_cast<uint64_t>(args.a_cols);
    const uint64_t wa = static_cast<uint64_t>(conv.a_spatial[2]);
    const uint64_t ha = static_cast<uint64_t>(conv.a_spatial[1]);
    const uint64_t da = static_cast<uint64_t>(conv.a_spatial[0]);
    const uint64_t dims[5] = {c, wa, ha, da, static_cast<uint64_t>(args.groups) * geo.batch};
    const uint64_t strides[4] = {c * 2, wa * c * 2, ha * wa * c * 2, da * ha * wa * c * 2};
    const uint32_t box[5] = {kBs, 1u << geo.tile_w_log2, static_cast<uint32_t>(geo.box_h), 1, 1};
    if (args.a_cols > INT32_MAX ||
        !tma::EncodeSwizzled(&x_map, kKind == MmaKind::kBf16, 5, args.a, dims, strides, box)) {
      return cudaErrorNotSupported;
    }
  }
  if (!EncodeWeightBlockMap<kKind>(&w_map, args.w, args.nnz * geo.taps, args.groups)) {
    return cudaErrorNotSupported;
  }
  auto kernel = ConvWgmmaTmaKernel<Elem, kTransW, kKernelH>;
  static std::atomic<uint64_t> done_devices{0};
  if (OptInSharedMemory(reinterpret_cast<const void*>(kernel), kMaxSmemBytes, done_devices) !=
      cudaSuccess) {
    return cudaErrorNotSupported;
  }
  const int smem_bytes = static_cast<int>(kAlign + kStages * geo.stage_bytes + 2 * kStages * 8);
  const int64_t tiles = static_cast<int64_t>(geo.batch) * geo.out_spatial[0] * geo.tiles_h *
                        geo.tiles_w;
  const dim3 grid(static_cast<unsigned>(args.out_blocks),
                  static_cast<unsigned>(std::min(tiles, kMaxGridYZ)),
                  static_cast<unsigned>(std::min(args.groups, kMaxGridYZ)));
  kernel<<<grid, kThreads, smem_bytes, stream>>>(args, x_map, w_map, geo, tiles, out_f32);
  return cudaSuccess;
}

template <MmaKind kKind, bool kTransW>
cudaError_t Launch(const BsmmArgs& args, const ConvGather& conv, const ConvTmaGeometry& geo,
                   bool out_f32, cudaStream_t stream) {
  switch (geo.kernel[1]) {
    case 1: return LaunchHeight<kKind, kTransW, 1>(args, conv, geo, out_f32, stream);
    case 3: return LaunchHeight<kKind, kTransW, 3>(args, conv, geo, out_f32, stream);
    case 5: return LaunchHeight<kKind, kTransW, 5>(args, conv, geo, out_f32, stream);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace
}  // namespace bsmm_tc

cudaError_t LaunchConvWgmmaTma(ElementType input, ElementType output, const BsmmArgs& args,
                               const ConvGather& conv, cudaStream_t stream) {
  const bool half = input == ElementType::kF16 || input == ElementType::kBF16;
  const bool out_ok = output == input || output == ElementType::kF32;
  bsmm_tc::ConvTmaGeometry geo{};
  if (!half || !out_ok || args.block_size != 32 || args.out_blocks > bsmm_tc::kMaxGridX ||
      args.groups < 1 || !Aligned16(args.a) || !Aligned16(args.w) || !Aligned16(args.out) ||
      reinterpret_cast<uintptr_t>(args.entries) % 8 != 0 || !WgmmaAvailable() ||
      !bsmm_tc::MakeConvTmaGeometry(args, conv, geo)) {
    return cudaErrorNotSupported;
  }
  const bool out_f32 = output == ElementType::kF32;
  const bool bf16 = input == ElementType::kBF16;
  using bsmm_tc::MmaKind;
  if (conv.transposed) {
    return bf16 ? bsmm_tc::Launch<MmaKind::kBf16, true>(args, conv, geo, out_f32, stream)
                : bsmm_tc::Launch<MmaKind::kF16, true>(args, conv, geo, out_f32, stream);
  }
  return bf16 ? bsmm_tc::Launch<MmaKind::kBf16, false>(args, conv, geo, out_f32, stream)
              : bsmm_tc::Launch<MmaKind::kF16, false>(args, conv, geo, out_f32, stream);
}

}  // namespace jbs
