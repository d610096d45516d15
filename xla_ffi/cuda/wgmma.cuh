// Warpgroup-level tensor-core primitives of sm_90a (wgmma.mma_async), for 16-bit inputs and
// float32 accumulators. Header-only and free of kernel policy, like tensor_core.cuh.
//
// Only the sm_90a target has these instructions: the bodies compile to a trap elsewhere (the
// sm_80 SASS and the compute_90 PTX of the default build), and launchers must route to a
// kernel that uses them only where WgmmaAvailable() (launch_util.h) says so.
//
// Shared-memory operands are given by 64-bit matrix descriptors (PTX ISA, "Matrix Descriptor
// Format"): bits 0-13 start address >> 4, 16-29 leading byte offset >> 4, 32-45 stride byte
// offset >> 4, 62-63 swizzle mode. The kernels use the 64-byte swizzled layout in which TMA
// boxes of 64-byte rows land (DescriptorSwizzled64). The unswizzled canonical layouts, filled
// by cp.async, measured 3x slower for the same tile (benchmarks/NOTES.md v15) and are gone.
//
// Accumulators of m64nNk16 (PTX ISA, "Register Fragments: wgmma .m64nNk16"): thread t of the
// warpgroup, warp w = t / 32, lane l = t % 32, holds N / 2 floats; float i is
//   row 16 w + l / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (l % 4) + i % 2,
// that is the mma.sync m16n8 C layout per warp, one n8 tile per 4 floats.
//
// Ordering: TMA writes shared memory through the async proxy that wgmma reads through, so an
// mbarrier wait on the box's completion is all a consumer needs; accumulators must not be
// touched between WgmmaFence and the WgmmaWait that retires their group.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_WGMMA_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_WGMMA_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace jbs {
namespace wg {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define JBS_WGMMA_DEVICE 1
#else
#define JBS_WGMMA_DEVICE 0
#endif

// The address and byte-offset fields of a descriptor (swizzle mode 0).
__device__ __forceinline__ uint64_t DescriptorFields(uint32_t address, uint32_t leading_bytes,
                                               uint32_t stride_bytes) {
  return static_cast<uint64_t>((address & 0x3FFFFu) >> 4) |
         (static_cast<uint64_t>((leading_bytes & 0x3FFFFu) >> 4) << 16) |
         (static_cast<uint64_t>((stride_bytes & 0x3FFFFu) >> 4) << 32);
}

// Descriptor of an operand in the 64-byte swizzled canonical layout (swizzle mode 2), which is
// how a TMA box of 64-byte rows lands with CU_TENSOR_MAP_SWIZZLE_64B: 8-row atoms of 512 bytes
// whose 16-byte pieces are permuted by the row (piece c of row r at piece c ^ ((r / 2) % 4)).
//   K-major: rows of M or N are 64 bytes apart, SBO steps to the next 8 rows (512 bytes), LBO
//     is unused (1 by convention), and a k16 step moves the start address 32 bytes inside the
//     atom (the hardware applies the swizzle to the computed addresses).
//   MN-major (transpose flag 1): rows of K are 64 bytes of 32 M/N elements, SBO steps to the
//     next 8 k (512 bytes), LBO to the next 32 M/N elements (unused at N = 32).
// The atoms must start at 512-byte aligned addresses (base offset 0).
__device__ __forceinline__ uint64_t DescriptorSwizzled64(uint32_t address, uint32_t leading_bytes,
                                                         uint32_t stride_bytes) {
  return DescriptorFields(address, leading_bytes, stride_bytes) | (uint64_t{2} << 62);
}

// The same for the 32-byte swizzle (mode 3), in which TMA boxes of 32-byte rows (16 elements,
// one block row at bs 16) land: 8-row atoms of 256 bytes, piece c of row r at c ^ ((r / 4) % 2).
//   K-major: rows 32 bytes apart, SBO 256 bytes to the next 8 rows, one k16 step per row.
//   MN-major: rows of K are 32 bytes of 16 M/N elements, SBO 256 bytes to the next 8 k, LBO to
//     the next 16 M/N elements (unused at N = 16).
// The atoms must start at 256-byte aligned addresses.
__device__ __forceinline__ uint64_t DescriptorSwizzled32(uint32_t address, uint32_t leading_bytes,
                                                         uint32_t stride_bytes) {
  return DescriptorFields(address, leading_bytes, stride_bytes) | (uint64_t{3} << 62);
}

// The same for the 128-byte swizzle (mode 1), used MN-major for an operand stored transposed
// (x^T, `wgmma_tma_at`): rows of K are 128 bytes of 64 M/N elements, 8-row atoms of 1 KB (SBO
// 1024 bytes to the next 8 k), LBO to the next 64 M/N elements (unused for one m64 slab). The
// atoms must start at 1024-byte aligned addresses.
__device__ __forceinline__ uint64_t DescriptorSwizzled128(uint32_t address, uint32_t leading_bytes,
                                                          uint32_t stride_bytes) {
  return DescriptorFields(address, leading_bytes, stride_bytes) | (uint64_t{1} << 62);
}

// Orders this thread's earlier register and shared-memory accesses before the warpgroup's
// next wgmma.mma_async (warpgroup-collective).
__device__ __forceinline__ void WgmmaFence() {
#if JBS_WGMMA_DEVICE
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}

// Closes the group of wgmma.mma_async issued since the last commit (warpgroup-collective).
__device__ __forceinline__ void WgmmaCommit() {
#if JBS_WGMMA_DEVICE
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}

// Waits until at most kPending of the warpgroup's committed groups are still running.
template <int kPending>
__device__ __forceinline__ void WgmmaWait() {
#if JBS_WGMMA_DEVICE
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#else
  __trap();
#endif
}

// Keeps the compiler from moving accesses to accumulator registers across this point (the
// asynchronous wgmma writes them behind its back until WgmmaWait retires the group).
template <int kN>
__device__ __forceinline__ void FenceAccumulators(float (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The frame the wgmma wrappers below share: the 16-bit element check, and ISSUE(TYPE) with
// TYPE the PTX name of Elem on sm_90a (a trap elsewhere; launchers never get there). ISSUE is a
// macro because the register lists of each shape must stand in an asm literal.
template <typename Elem>
inline constexpr bool kWgmmaElement =
    std::is_same_v<Elem, __nv_bfloat16> || std::is_same_v<Elem, __half>;

#if JBS_WGMMA_DEVICE
#define JBS_WGMMA_BY_TYPE(ISSUE)                          \
  if constexpr (std::is_same_v<Elem, __nv_bfloat16>) {  \
    ISSUE("bf16");                                      \
  } else {                                              \
    ISSUE("f16");                                       \
  }
#else
#define JBS_WGMMA_BY_TYPE(ISSUE) \
  (void)d;                       \
  (void)a_descriptor;            \
  (void)b_descriptor;            \
  __trap();
#endif

// d (64 x 32 float, layout above) += A (64 x 16, K-major descriptor when kTransA is 0, MN-major
// when 1) * B (16 x 32, K-major descriptor when kTransB is 0, MN-major when 1).
// Warpgroup-collective and asynchronous: d is only valid after WgmmaCommit and WgmmaWait.
template <typename Elem, int kTransB, int kTransA = 0>
__device__ __forceinline__ void Wgmma64x32x16(float (&d)[16], uint64_t a_descriptor,
                                              uint64_t b_descriptor) {
  static_assert(kWgmmaElement<Elem>, "16-bit inputs");
#define JBS_WGMMA_64x32x16(TYPE)                                                              \
  asm volatile(                                                                              \
      "{\n"                                                                                  \
      ".reg .pred accumulate;\n"                                                             \
      "setp.ne.b32 accumulate, %18, 0;\n"                                                    \
      "wgmma.mma_async.sync.aligned.m64n32k16.f32." TYPE "." TYPE " "                        \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "             \
      "%16, %17, accumulate, 1, 1, %20, %19;\n"                                              \
      "}\n"                                                                                  \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),          \
        "+f"(d[13]), "+f"(d[14]), "+f"(d[15])                                                \
      : "l"(a_descriptor), "l"(b_descriptor), "r"(1), "n"(kTransB), "n"(kTransA))
  JBS_WGMMA_BY_TYPE(JBS_WGMMA_64x32x16)
#undef JBS_WGMMA_64x32x16
}

// d (64 x 16 float, layout above) += A (64 x 16) * B (16 x 16), transpose flags as in
// Wgmma64x32x16. Warpgroup-collective and asynchronous, as Wgmma64x32x16.
template <typename Elem, int kTransB, int kTransA = 0>
__device__ __forceinline__ void Wgmma64x16x16(float (&d)[8], uint64_t a_descriptor,
                                              uint64_t b_descriptor) {
  static_assert(kWgmmaElement<Elem>, "16-bit inputs");
#define JBS_WGMMA_64x16x16(TYPE)                                                              \
  asm volatile(                                                                              \
      "{\n"                                                                                  \
      ".reg .pred accumulate;\n"                                                             \
      "setp.ne.b32 accumulate, %10, 0;\n"                                                    \
      "wgmma.mma_async.sync.aligned.m64n16k16.f32." TYPE "." TYPE " "                        \
      "{%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, accumulate, 1, 1, %11, %12;\n"             \
      "}\n"                                                                                  \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), \
        "+f"(d[7])                                                                           \
      : "l"(a_descriptor), "l"(b_descriptor), "r"(1), "n"(kTransA), "n"(kTransB))
  JBS_WGMMA_BY_TYPE(JBS_WGMMA_64x16x16)
#undef JBS_WGMMA_64x16x16
}

// d (64 x 64 float, layout above) += A (64 x 16) * B (16 x 64); B is K-major when kTransB is
// 0 and MN-major when 1, A likewise with kTransA (the template order of Wgmma64x32x16).
// Warpgroup-collective and asynchronous, as Wgmma64x32x16.
template <typename Elem, int kTransB, int kTransA = 0>
__device__ __forceinline__ void Wgmma64x64x16(float (&d)[32], uint64_t a_descriptor,
                                              uint64_t b_descriptor) {
  static_assert(kWgmmaElement<Elem>, "16-bit inputs");
#define JBS_WGMMA_64x64x16(TYPE)                                                             \
  asm volatile(                                                                              \
      "{\n"                                                                                  \
      ".reg .pred accumulate;\n"                                                             \
      "setp.ne.b32 accumulate, %34, 0;\n"                                                    \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " "                        \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, "    \
      "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "              \
      "%32, %33, accumulate, 1, 1, %35, %36;\n"                                              \
      "}\n"                                                                                  \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),  \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),           \
        "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),        \
        "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),        \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),        \
        "+f"(d[31])                                                                          \
      : "l"(a_descriptor), "l"(b_descriptor), "r"(1), "n"(kTransA), "n"(kTransB))
  JBS_WGMMA_BY_TYPE(JBS_WGMMA_64x64x16)
#undef JBS_WGMMA_64x64x16
}

#undef JBS_WGMMA_BY_TYPE

}  // namespace wg
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_WGMMA_CUH_
