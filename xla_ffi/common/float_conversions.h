// Host-side conversions between float and the 16-bit float formats, operating on raw uint16_t
// bits. The CPU kernels keep 16-bit buffers as bits (no dependency on a half-precision type
// library) and widen to float for arithmetic, so these must match what JAX/ml_dtypes produce:
// round-to-nearest-even, NaN stays NaN, infinities and subnormals exact.
#ifndef JAX_BLOCKSPARSE_XLA_FFI_COMMON_FLOAT_CONVERSIONS_H_
#define JAX_BLOCKSPARSE_XLA_FFI_COMMON_FLOAT_CONVERSIONS_H_

#include <cstdint>
#include <cstring>

namespace jbs {

inline uint32_t FloatToBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

inline float BitsToFloat(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// bfloat16 is the upper half of a float32, so widening is a shift.
inline float Bf16BitsToFloat(uint16_t bits) {
  return BitsToFloat(static_cast<uint32_t>(bits) << 16);
}

inline uint16_t FloatToBf16Bits(float value) {
  uint32_t bits = FloatToBits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    // Rounding could carry a NaN's payload into the exponent and produce Inf; force the quiet bit.
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  // Adding 0x7fff plus the lowest kept bit rounds ties to even; a carry out of the mantissa
  // correctly bumps the exponent, and past the largest finite value it lands exactly on Inf.
  const uint32_t lowest_kept_bit = (bits >> 16) & 1u;
  bits += 0x7fffu + lowest_kept_bit;
  return static_cast<uint16_t>(bits >> 16);
}

inline float F16BitsToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1fu) {
    return BitsToFloat(sign | 0x7f800000u | (mantissa << 13));  // Inf, or NaN keeping payload.
  }
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24 is exact in float, so compute it arithmetically
    // instead of renormalising by hand.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // 2^-24
    return BitsToFloat(sign | FloatToBits(magnitude));
  }
  // Rebias the exponent from 15 to 127.
  return BitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t FloatToF16Bits(float value) {
  const uint32_t bits = FloatToBits(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;

  if (magnitude > 0x7f800000u) return sign | 0x7e00u;  // NaN (quiet).
  // 65520 is the midpoint between the largest half (65504, odd mantissa) and 2^16, so it and
  // everything above rounds to Inf under ties-to-even.
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;

  if (magnitude < 0x38800000u) {
    // Below the smallest normal half (2^-14): the result is a subnormal (or zero) whose integer
    // mantissa is round(|value| * 2^24).
    const uint32_t float_exponent = magnitude >> 23;
    if (float_exponent == 0) return sign;  // Float subnormals are far below half's range.
    const uint32_t full_mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    // |value| * 2^24 = full_mantissa * 2^(float_exponent - 126).
    const uint32_t shift = 126u - float_exponent;
    if (shift > 24u) return sign;  // Less than half of the smallest subnormal.
    uint32_t quotient = full_mantissa >> shift;
    const uint32_t remainder = full_mantissa & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (remainder > half || (remainder == half && (quotient & 1u))) ++quotient;
    // A round-up to 0x400 is exactly the smallest normal encoding, so no special case.
    return static_cast<uint16_t>(sign | quotient);
  }

  // Normal range: rebias 127 -> 15 and round the 13 dropped bits to nearest even. The overflow
  // case was excluded above, so a mantissa carry can at most reach the largest finite exponent.
  uint32_t rebiased = magnitude - 0x38000000u;
  rebiased += 0x0fffu + ((rebiased >> 13) & 1u);
  return static_cast<uint16_t>(sign | (rebiased >> 13));
}

}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_COMMON_FLOAT_CONVERSIONS_H_
