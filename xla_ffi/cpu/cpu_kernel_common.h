// Building blocks shared by the CPU kernels (block-sparse products and convolutions): widening
// and narrowing of the storage types, short SIMD vectors, and the register-tiled micro-kernels.
// Internal to xla_ffi/cpu; see blocksparse_cpu_kernels.cc for the performance and determinism
// notes that apply to every user.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CPU_CPU_KERNEL_COMMON_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CPU_CPU_KERNEL_COMMON_H_

#include <cstdint>
#include <type_traits>

#include "xla_ffi/common/float_conversions.h"
#include "xla_ffi/cpu/blocksparse_cpu_kernels.h"

namespace jbs::cpu::kernel_common {

inline float Widen(float v) { return v; }
inline double Widen(double v) { return v; }
inline float Widen(Bf16Bits v) { return Bf16BitsToFloat(v.bits); }
inline float Widen(F16Bits v) { return F16BitsToFloat(v.bits); }

inline void Narrow(float v, float* dst) { *dst = v; }
inline void Narrow(double v, double* dst) { *dst = v; }
inline void Narrow(float v, Bf16Bits* dst) { dst->bits = FloatToBf16Bits(v); }
inline void Narrow(float v, F16Bits* dst) { dst->bits = FloatToF16Bits(v); }

// Short SIMD vectors. GCC/Clang vector extensions lower to SSE2 on a baseline x86-64 build (and
// to NEON etc. elsewhere) without intrinsics or -march flags; other compilers get a plain
// array with the same interface, which they may vectorise themselves. Elementwise arithmetic is
// IEEE, identical to the scalar expression, so the lane width never changes a result.
#if defined(__GNUC__) || defined(__clang__)
template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(16)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
inline Vec<T> LoadVec(const T* p) {
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void StoreVec(T* p, Vec<T> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}
inline Vec<float> Broadcast(float x) { return Vec<float>{x, x, x, x}; }
inline Vec<double> Broadcast(double x) { return Vec<double>{x, x}; }
#else
template <typename T>
struct Vec {
  static constexpr int kLanes = 16 / sizeof(T);
  T v[kLanes];
  Vec& operator+=(const Vec& o) {
    for (int l = 0; l < kLanes; ++l) v[l] += o.v[l];
    return *this;
  }
  friend Vec operator*(const Vec& a, const Vec& b) {
    Vec r;
    for (int l = 0; l < kLanes; ++l) r.v[l] = a.v[l] * b.v[l];
    return r;
  }
};
template <typename T>
inline Vec<T> LoadVec(const T* p) {
  Vec<T> r;
  for (int l = 0; l < Vec<T>::kLanes; ++l) r.v[l] = p[l];
  return r;
}
template <typename T>
inline void StoreVec(T* p, Vec<T> v) {
  for (int l = 0; l < Vec<T>::kLanes; ++l) p[l] = v.v[l];
}
template <typename T>
inline Vec<T> Broadcast(T x) {
  Vec<T> r;
  for (int l = 0; l < Vec<T>::kLanes; ++l) r.v[l] = x;
  return r;
}
#endif

template <typename T>
constexpr int kLanes = 16 / sizeof(T);

// Register tile: MR rows x NV vectors (NR = NV * lanes columns) of the output block: 8 vector
// accumulators plus 2 operand vectors and a broadcast fit the 16 SSE2 registers.
template <typename Acc>
struct Tile {
  static constexpr int kRows = 4;  // MR
  static constexpr int kVecs = 2;  // NV
};

// c[i, j] (+)= sum over segments s, t = 0..BS-1 of a_s[i * lda + t] * w_s[t * BS + j]
// for i < R, j < NV * lanes. `a_s = a_base[s] + a_off`, `w_s = w_base[s] + w_off`; c has row
// stride BS. Products are added one at a time in (s, t) order.
template <typename Acc, int BS, int R, int NV>
inline void BsmmMicroKernel(int64_t n_seg, const Acc* const* a_base, int64_t a_off, int64_t lda,
                            const Acc* const* w_base, int64_t w_off, bool init, Acc* c) {
  constexpr int L = kLanes<Acc>;
  Vec<Acc> acc[R][NV];
  for (int i = 0; i < R; ++i) {
    for (int v = 0; v < NV; ++v) acc[i][v] = init ? Vec<Acc>{} : LoadVec(c + i * BS + v * L);
  }
  for (int64_t s = 0; s < n_seg; ++s) {
    const Acc* a = a_base[s] + a_off;
    const Acc* w = w_base[s] + w_off;
#pragma GCC unroll 2
    for (int t = 0; t < BS; ++t) {
      Vec<Acc> w_row[NV];
      for (int v = 0; v < NV; ++v) w_row[v] = LoadVec(w + t * BS + v * L);
      for (int i = 0; i < R; ++i) {
        const Vec<Acc> x = Broadcast(a[i * lda + t]);
        for (int v = 0; v < NV; ++v) acc[i][v] += x * w_row[v];
      }
    }
  }
  for (int i = 0; i < R; ++i) {
    for (int v = 0; v < NV; ++v) StoreVec(c + i * BS + v * L, acc[i][v]);
  }
}

// c (rows x BS, row stride BS) = or += the product of a segment's panels and blocks, for every
// row: the micro-kernel over R = MR row tiles, then single rows for the remainder.
template <typename Acc, int BS, int MR, int NV>
inline void PanelProduct(int64_t n_seg, const Acc* const* a_base, int64_t lda,
                         const Acc* const* w_base, bool init, int64_t rows, Acc* c) {
  constexpr int NR = NV * kLanes<Acc>;
  for (int64_t q = 0; q < BS; q += NR) {
    int64_t r = 0;
    for (; r + MR <= rows; r += MR) {
      BsmmMicroKernel<Acc, BS, MR, NV>(n_seg, a_base, r * lda, lda, w_base, q, init, c + r * BS + q);
    }
    for (; r < rows; ++r) {
      BsmmMicroKernel<Acc, BS, 1, NV>(n_seg, a_base, r * lda, lda, w_base, q, init, c + r * BS + q);
    }
  }
}

// c[i, j] (+)= sum_{m < rows} a[m * lda + i] * b[m * ldb + j] for i < MR, j < NV * lanes; c row
// stride BS. Products are added one at a time in increasing m.
template <typename Acc, int BS, int MR, int NV>
inline void SampledMicroKernel(int64_t rows, const Acc* a, int64_t lda, const Acc* b,
                               int64_t ldb, bool init, Acc* c) {
  constexpr int L = kLanes<Acc>;
  Vec<Acc> acc[MR][NV];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) acc[i][v] = init ? Vec<Acc>{} : LoadVec(c + i * BS + v * L);
  }
#pragma GCC unroll 2
  for (int64_t m = 0; m < rows; ++m) {
    const Acc* a_row = a + m * lda;
    Vec<Acc> b_row[NV];
    for (int v = 0; v < NV; ++v) b_row[v] = LoadVec(b + m * ldb + v * L);
    for (int i = 0; i < MR; ++i) {
      const Vec<Acc> x = Broadcast(a_row[i]);
      for (int v = 0; v < NV; ++v) acc[i][v] += x * b_row[v];
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) StoreVec(c + i * BS + v * L, acc[i][v]);
  }
}

// Widens a rows x BS window of a strided buffer into dst (row stride dst_stride).
template <int BS, typename In, typename Acc>
inline void WidenRows(const In* src, int64_t src_stride, int64_t rows, Acc* dst,
                      int64_t dst_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const In* __restrict s = src + r * src_stride;
    Acc* __restrict d = dst + r * dst_stride;
    for (int c = 0; c < BS; ++c) d[c] = Widen(s[c]);
  }
}

// Widens a BS x BS weight block into dst (row stride BS), transposed when `transpose`, so that
// the micro-kernels always read the block's rows contiguously.
template <int BS, typename In, typename Acc>
inline void PackWeightBlock(const In* block, bool transpose, Acc* dst) {
  if (transpose) {
    for (int r = 0; r < BS; ++r) {
      for (int c = 0; c < BS; ++c) dst[r * BS + c] = Widen(block[c * BS + r]);
    }
  } else {
    WidenRows<BS>(block, BS, BS, dst, BS);
  }
}

template <int BS, typename Acc, typename Out>
inline void StoreRows(const Acc* acc, int64_t rows, Out* dst, int64_t dst_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const Acc* __restrict s = acc + r * BS;
    Out* __restrict d = dst + r * dst_stride;
    for (int c = 0; c < BS; ++c) Narrow(s[c], d + c);
  }
}

// Expands X(In, Out) for each (input, output) pair of the FFI contract: the explicit
// instantiation lists of the CPU kernels.
#define JBS_FOR_EACH_TYPE_PAIR(X) \
  X(float, float)                 \
  X(double, double)               \
  X(Bf16Bits, Bf16Bits)           \
  X(Bf16Bits, float)              \
  X(F16Bits, F16Bits)             \
  X(F16Bits, float)

// Calls `body(std::integral_constant<int, BS>{})` for the block sizes of the contract, so each
// kernel is compiled per block size; the FFI layer rejects any other size before calling.
template <typename Body>
void WithBlockSize(int64_t block_size, Body&& body) {
  switch (block_size) {
    case 8: return body(std::integral_constant<int, 8>{});
    case 16: return body(std::integral_constant<int, 16>{});
    case 32: return body(std::integral_constant<int, 32>{});
    case 64: return body(std::integral_constant<int, 64>{});
    case 128: return body(std::integral_constant<int, 128>{});
    default: return;
  }
}

}  // namespace jbs::cpu::kernel_common

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CPU_CPU_KERNEL_COMMON_H_
