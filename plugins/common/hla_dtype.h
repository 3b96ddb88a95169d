// Host-side float16 / bfloat16 <-> float32 conversion (IEEE 754 binary16 and bfloat16,
// round-to-nearest-even, NaN kept NaN). No external dependencies. Internal to plugins/common.
#pragma once

#include <cstdint>
#include <cstring>

namespace hla {
namespace detail {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return bits_f32(sign);  // +-0
    // subnormal half: value = mant * 2^-24; renormalise into a float.
    exp = 127 - 15 + 1;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --exp;
    }
    mant &= 0x3ffu;
    return bits_f32(sign | (exp << 23) | (mant << 13));
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));  // inf / nan
  return bits_f32(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
}

inline uint16_t float_to_half(float f) {
  uint32_t x = f32_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u);  // nan / inf
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf
  if (x < 0x38800000u) {
    // |f| < 2^-14: half subnormal (or zero). Adding 0.5f (ulp 2^-24) rounds |f| to a
    // multiple of 2^-24 with the FPU's round-to-nearest-even; the low bits are the result.
    const float r = bits_f32(x) + 0.5f;
    return sign | uint16_t(f32_bits(r) - 0x3f000000u);
  }
  // normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even.
  const uint32_t odd = (x >> 13) & 1u;
  x += 0xc8000fffu + odd;  // (15 - 127) << 23 plus the rounding bias
  return sign | uint16_t(x >> 13);
}

inline float bf16_to_float(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet nan
  x += 0x7fffu + ((x >> 16) & 1u);
  return uint16_t(x >> 16);
}

}  // namespace detail
}  // namespace hla
