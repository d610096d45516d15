// Warp-level tensor-core primitives for sm_80 and newer (mma.sync, ldmatrix, cp.async).
// Header-only and free of kernel policy so several kernels can share it. Existing functions
// keep their names and semantics; new helpers are only ever added.
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16 / m16n8k8"). For a lane,
// g = lane / 4 ("group") and t = lane % 4 ("thread in group").
//
//   bf16/f16 m16n8k16, A (16x16, row-major), four 32-bit registers of two 16-bit values each:
//     a[0] = A[g    ][2t .. 2t+1]     a[1] = A[g + 8][2t .. 2t+1]
//     a[2] = A[g    ][2t+8 .. 2t+9]   a[3] = A[g + 8][2t+8 .. 2t+9]
//   B (16x8, indexed B[k][n]), two registers:
//     b[0] = B[2t .. 2t+1][g]         b[1] = B[2t+8 .. 2t+9][g]     (low half = smaller k)
//   C/D (16x8 float), four floats:
//     c[0], c[1] = C[g][2t], C[g][2t+1]       c[2], c[3] = C[g+8][2t], C[g+8][2t+1]
//
//   tf32 m16n8k8, A (16x8), four registers of one tf32 each:
//     a[0] = A[g][t]   a[1] = A[g+8][t]   a[2] = A[g][t+4]   a[3] = A[g+8][t+4]
//   B (8x8, B[k][n]): b[0] = B[t][g]   b[1] = B[t+4][g].   C/D as for m16n8k16.
//
// ldmatrix: lanes 8i .. 8i+7 give the row addresses (16 bytes each, 16-byte aligned) of 8x8
// matrix i of b16 elements; register i of every lane then holds row g, columns 2t .. 2t+1 of
// matrix i (with .trans: column g, rows 2t .. 2t+1). Hence, for 16-bit data:
//   * A row-major in shared memory -> LdMatrixX4 with lane l pointing at row (l % 16),
//     column 8 * (l / 16) of the 16x16 tile yields a[0..3] above.
//   * B stored n-major (B[k][n] at row n, contiguous k) -> LdMatrix (no .trans), rows = n.
//   * B stored k-major (row k, contiguous n) -> LdMatrix*Trans, rows = k.
// Viewing 32-bit elements as b16 pairs, a non-transposed ldmatrix also yields the tf32 A
// fragment (matrix = 8 rows x 4 floats) and an n-major tf32 B fragment; there is no 32-bit
// .trans, so k-major tf32 B must be read with scalar shared loads.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_TENSOR_CORE_CUH_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_TENSOR_CORE_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace jbs {
namespace tc {

// --- addresses ---------------------------------------------------------------------------

__device__ __forceinline__ uint32_t SharedAddress(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// --- mma.sync ------------------------------------------------------------------------------

// d += a * b, fp32 accumulate. All of these are warp-collective (every lane must execute).
__device__ __forceinline__ void MmaBf16(float (&d)[4], const uint32_t (&a)[4],
                                        const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void MmaF16(float (&d)[4], const uint32_t (&a)[4],
                                       const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// The m16n8k16 product of the 16-bit element type Elem (__half or __nv_bfloat16).
template <typename Elem>
__device__ __forceinline__ void Mma16(float (&d)[4], const uint32_t (&a)[4],
                                      const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<Elem, __half>) {
    MmaF16(d, a, b);
  } else {
    static_assert(std::is_same_v<Elem, __nv_bfloat16>, "16-bit element types only");
    MmaBf16(d, a, b);
  }
}

// The m16n8k8 product of 16-bit data: A (16 x 8) in two registers, a[0] = A[g][2t .. 2t+1],
// a[1] = A[g+8][2t .. 2t+1]; B (8 x 8) in one, B[2t .. 2t+1][g]; C/D as for m16n8k16. For
// bs 8 blocks, whose k is 8.
template <typename Elem>
__device__ __forceinline__ void Mma8(float (&d)[4], const uint32_t (&a)[2], uint32_t b) {
  if constexpr (std::is_same_v<Elem, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(b));
  } else {
    static_assert(std::is_same_v<Elem, __nv_bfloat16>, "16-bit element types only");
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(b));
  }
}

// Operands must already be tf32 bit patterns (see ToTf32 / SplitTf32); the tensor core would
// otherwise truncate the low mantissa bits instead of rounding them.
__device__ __forceinline__ void MmaTf32(float (&d)[4], const uint32_t (&a)[4],
                                        const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// --- tf32 conversion -----------------------------------------------------------------------

// Round-to-nearest (ties away) to tf32; the result is a float bit pattern with the low 13
// mantissa bits zero.
__device__ __forceinline__ uint32_t ToTf32(float x) {
  uint32_t out;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(out) : "f"(x));
  return out;
}

// x ~= big + small with both parts tf32: big carries the top 11 significant bits, small the
// next 11, so big*big + big*small + small*big (3xTF32) recovers close to fp32 accuracy. The
// dropped small*small term is below fp32 rounding of the product.
__device__ __forceinline__ void SplitTf32(float x, uint32_t& big, uint32_t& small) {
  big = ToTf32(x);
  small = ToTf32(x - __uint_as_float(big));
}

// The nearest tf32 (ties away from zero) by integer arithmetic, 2 instructions where sm_90's
// cvt.rna.tf32 takes 4 (its other two keep NaN a NaN): half a tf32 ulp added to the magnitude,
// then the 13 low bits cleared. Equal to cvt.rna for finite values and infinities (a carry out
// of the mantissa is the rounding up it should be). A NaN whose payload fills the top of the
// mantissa carries into the sign and comes out as a zero, so a caller must keep the NaN in
// another part, as the splits below do.
__device__ __forceinline__ uint32_t RoundTf32Bits(float x) {
  return (__float_as_uint(x) + 0x1000u) & 0xffffe000u;
}

// How a 3xTF32 product splits each operand (experiments tf32_split_*, benchmarks/NOTES.md v31).
// The conversions are a third to a half of the instructions of a float32 HIGHEST k-step.
enum class Tf32Split {
  kCvt,           // SplitTf32: 9 instructions per value
  kRoundedSmall,  // big by cvt.rna, small by RoundTf32Bits: 7, the same bits as kCvt for every
                  // finite x (see below for the others)
  kTruncatedBig,  // big = x with its low 13 bits cleared, small rounded: 4 (CUTLASS's FastF32
                  // split); x - big is then up to a tf32 ulp, so the pair's error bound doubles
                  // (2^-21 of |x| against 2^-22)
};
// Non-finite x under the two integer splits: x - big is NaN, and its rounding comes out as a
// zero small part (kCvt's keeps a NaN). A NaN with payload in the top 10 mantissa bits stays a
// NaN in big. One whose payload lies only in the low 13 bits enters the tensor core as an
// infinity (the tensor core ignores those bits, and cvt.rna passes NaNs through unrounded, so
// TF32 products do the same), and the output is then +-inf or NaN instead of NaN. x = +-inf
// gives NaN wherever w's small part is zero or of w's opposite sign, as with kCvt.

template <Tf32Split kSplit>
__device__ __forceinline__ void SplitTf32As(float x, uint32_t& big, uint32_t& small) {
  if constexpr (kSplit == Tf32Split::kCvt) {
    SplitTf32(x, big, small);
  } else {
    big = kSplit == Tf32Split::kRoundedSmall ? ToTf32(x) : (__float_as_uint(x) & 0xffffe000u);
    small = RoundTf32Bits(x - __uint_as_float(big));
  }
}

// --- ldmatrix ------------------------------------------------------------------------------

// `address` is this lane's row address (shared state space, see SharedAddress). x1 uses lanes
// 0..7, x2 lanes 0..15, x4 all 32.
__device__ __forceinline__ void LdMatrixX1(uint32_t& r0, uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r0) : "r"(address));
}

__device__ __forceinline__ void LdMatrixX2(uint32_t& r0, uint32_t& r1, uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(address));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                           uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(address));
}

__device__ __forceinline__ void LdMatrixX1Trans(uint32_t& r0, uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
               : "=r"(r0)
               : "r"(address));
}

__device__ __forceinline__ void LdMatrixX2Trans(uint32_t& r0, uint32_t& r1, uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(address));
}

__device__ __forceinline__ void LdMatrixX4Trans(uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                                uint32_t& r3, uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(address));
}

// --- fragments of 16-bit tiles staged reduction-major ([k][m] or [k][n], `pitch` elements) ---

// A (m16 x k16) of the transposed tile, for m16n8k16: matrices (m 0-7, k 0-7), (m 8-15, k 0-7),
// (m 0-7, k 8-15), (m 8-15, k 8-15) from columns m0 .. m0 + 15. With m_step 0 both m halves read
// columns m0 .. m0 + 7 (an 8-wide operand run through an m16 mma).
__device__ __forceinline__ void LdMatrixATransposed(uint32_t (&a)[4], uint32_t tile, int pitch,
                                                    int k0, int m0, int lane, int m_step = 8) {
  const int row = k0 + (lane & 7) + ((lane >> 4) << 3);
  const int col = m0 + ((lane >> 3) & 1) * m_step;
  LdMatrixX4Trans(a[0], a[1], a[2], a[3], tile + static_cast<uint32_t>((row * pitch + col) * 2));
}

// B (k16 x n8) of the two n8 tiles at columns n0 and n0 + 8, for m16n8k16.
__device__ __forceinline__ void LdMatrixBPair(uint32_t (&b_first)[2], uint32_t (&b_second)[2],
                                              uint32_t tile, int pitch, int k0, int n0,
                                              int lane) {
  const int row = k0 + (lane & 7) + (((lane >> 3) & 1) << 3);
  const int col = n0 + ((lane >> 4) << 3);
  LdMatrixX4Trans(b_first[0], b_first[1], b_second[0], b_second[1],
                  tile + static_cast<uint32_t>((row * pitch + col) * 2));
}

// --- cp.async ------------------------------------------------------------------------------

// 16-byte global -> shared copy that bypasses L1 (.cg). When `valid` is false nothing is read
// and the 16 destination bytes are zero-filled, which is how out-of-range rows and padding
// entries become zeros without a branch around the copy; `global` must still be a mapped
// address then (pass any in-bounds pointer).
__device__ __forceinline__ void CpAsync16(uint32_t shared_address, const void* global, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address),
               "l"(global), "r"(src_bytes)
               : "memory");
}

__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most kPending of this thread's committed groups are still in flight. Only
// the issuing thread's copies are covered: follow with a barrier before others read them.
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// The multi-stage ring every streaming kernel here runs, in two halves so that a kernel can do
// other work while the first copies are in flight. issue(step) copies step `step` into stage
// step % kStages and compute(step) consumes it; both are called by every thread.
//   Prime: issue steps 0 .. kStages - 2, one commit group each (empty past `steps`).
//   Drain: per step i, wait for its copies, barrier (which also frees the stage consumed at
//   i - 1), issue step i + kStages - 1 into that stage, compute i; then wait for every copy
//   and barrier, so that the stages' memory is free for what comes next.
template <int kStages, typename Issue>
__device__ __forceinline__ void PrimeCpAsyncRing(int64_t steps, Issue&& issue) {
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < steps) issue(s);
    CpAsyncCommit();
  }
}

template <int kStages, typename Issue, typename Compute>
__device__ __forceinline__ void DrainCpAsyncRing(int64_t steps, Issue&& issue,
                                                 Compute&& compute) {
  for (int64_t i = 0; i < steps; ++i) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();
    if (i + kStages - 1 < steps) issue(i + kStages - 1);
    CpAsyncCommit();
    compute(i);
  }
  CpAsyncWait<0>();
  __syncthreads();
}

// --- barriers ------------------------------------------------------------------------------

// Named barrier over `threads` threads (a multiple of 32) of the block; id 0 is the one
// __syncthreads uses, so sub-block groups should take ids 1..15.
__device__ __forceinline__ void NamedBarrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// --- output packing -----------------------------------------------------------------------

// Two fp32 accumulators rounded to a pair of 16-bit values (Elem = __half or __nv_bfloat16),
// low half first, for one 32-bit store.
template <typename Elem>
__device__ __forceinline__ uint32_t PackPair(float lo, float hi) {
  if constexpr (std::is_same_v<Elem, __half>) {
    return static_cast<uint32_t>(__half_as_ushort(__float2half_rn(lo))) |
           (static_cast<uint32_t>(__half_as_ushort(__float2half_rn(hi))) << 16);
  } else {
    return static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
           (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
  }
}

template <int kMT, int kNT>
__device__ __forceinline__ void ZeroAccumulators(float (&acc)[kMT][kNT][4]) {
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int ni = 0; ni < kNT; ++ni)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[mi][ni][c] = 0.f;
}

// Spills a warp's kMT x kNT m16n8 fp32 accumulator tiles into a row-major fp32 tile in shared
// memory with a pitch of `pitch` floats, tile (mi, ni) at row row0 + 16 mi, column col0 + 8 ni.
// With `lower_half` false the rows 8-15 of each tile (an m16 mma run on 8 real rows) are left
// out.
template <int kMT, int kNT>
__device__ __forceinline__ void SpillAccumulators(float* tile, int pitch, int row0, int col0,
                                                  const float (&acc)[kMT][kNT][4], int lane,
                                                  bool lower_half = true) {
  const int g = lane >> 2;
  const int col = col0 + 2 * (lane & 3);
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int ni = 0; ni < kNT; ++ni) {
      float* dst = tile + (row0 + mi * 16 + g) * pitch + col + ni * 8;
      *reinterpret_cast<float2*>(dst) = make_float2(acc[mi][ni][0], acc[mi][ni][1]);
      if (lower_half) {
        *reinterpret_cast<float2*>(dst + 8 * pitch) = make_float2(acc[mi][ni][2], acc[mi][ni][3]);
      }
    }
}

// Stores a warp's 32 x 32 fp32 accumulators (2 x 4 m16n8 tiles: acc[mi][ni] covers rows
// 16 mi .., columns 8 ni ..) into a row-major 32 x 32 block of Out, straight from registers:
// lane (g, t) holds rows g and g + 8 of each tile at columns 2t, 2t + 1. The four lanes of a row
// write 8 or 16 contiguous bytes per tile, which L2 merges into whole sectors.
template <typename Out>
__device__ __forceinline__ void StoreWarpTile32(Out* block, const float (&acc)[2][4][4],
                                                int lane) {
  const int g = lane >> 2;
  const int col = 2 * (lane & 3);
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        Out* dst = block + (mi * 16 + g + 8 * h) * 32 + ni * 8 + col;
        const float lo = acc[mi][ni][2 * h];
        const float hi = acc[mi][ni][2 * h + 1];
        if constexpr (std::is_same_v<Out, float>) {
          *reinterpret_cast<float2*>(dst) = make_float2(lo, hi);
        } else {
          *reinterpret_cast<uint32_t*>(dst) = PackPair<Out>(lo, hi);
        }
      }
}

// StoreWarpTile32 for 16-bit Out through 2 KB of this warp's shared memory (`staging`, 16-byte
// aligned, free until the caller's next __syncwarp): the direct form writes each 64-byte row of
// the block as four lanes' 4-byte pieces, so every store instruction leaves 8 sectors half
// filled; here the warp packs the tile in shared memory and writes it with four 16-byte stores
// per lane, each instruction 512 contiguous bytes. Rows are 64 bytes; the 16-byte unit u of row
// r is stored at unit u ^ ((r >> 1) & 3), which keeps both the fragment writes (8 rows x 4
// lanes) and the 16-byte reads (2 rows x 4 units per phase) free of bank conflicts.
template <typename Out>
__device__ __forceinline__ void StoreWarpTile32Staged(Out* block, const float (&acc)[2][4][4],
                                                      int lane, unsigned char* staging) {
  static_assert(sizeof(Out) == 2, "float32 blocks are stored whole-sector already");
  const int g = lane >> 2;
  const int t = lane & 3;
  __syncwarp();  // every lane is done reading what `staging` held before
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = mi * 16 + g + 8 * h;
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const int unit = ni ^ ((row >> 1) & 3);
        *reinterpret_cast<uint32_t*>(staging + row * 64 + unit * 16 + t * 4) =
            PackPair<Out>(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
      }
    }
  __syncwarp();
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = i * 8 + (lane >> 2);
    const int unit = lane & 3;
    const uint4 packed =
        *reinterpret_cast<const uint4*>(staging + row * 64 + ((unit ^ ((row >> 1) & 3)) * 16));
    *reinterpret_cast<uint4*>(block + row * 32 + unit * 8) = packed;
  }
}

}  // namespace tc
}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_TENSOR_CORE_CUH_
