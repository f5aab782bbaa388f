// SIMD building blocks of the conv kernels (DcConv2D, DcDepthwiseConv2D): a 16-lane float accumulator and
// the fused activations, with a NEON implementation chosen at compile time (#if defined(__ARM_NEON): every
// arm64-v8a / aarch64 build) and a portable one everywhere else.
//
// Why explicit NEON and not only auto-vectorisation: the accumulator must stay in four q registers across a
// sparse row walk whose trip count and column steps are data dependent; GCC and Clang keep a float[16]
// array in memory there at -O2 (the Android NDK default), which costs a load and a store per FMA.
// On x86-64 the portable loops are also compiled a second time with AVX2+FMA enabled and chosen at run time
// (see conv2d_math.cc), as the FC kernel does, so one x86-64 build runs everywhere.
#ifndef DC_KERNELS_NEON_MATH_H_
#define DC_KERNELS_NEON_MATH_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/cpu_dispatch.h"    // PortableOnly, AvxClonesAllowed
#include "kernels/base.h"  // Activation, Activate

#if defined(__ARM_NEON)
#include <arm_neon.h>
#define DC_KERNELS_NEON 1
#else
#define DC_KERNELS_NEON 0
#endif

namespace dc::kernels::simd {

// Output pixels per im2col panel; one accumulator covers one panel of one output channel.
constexpr int kLanes = 16;

// Clamp bounds of the piecewise-linear activations (lo > hi means "no clamp on that side" is never used:
// kNone and kTanh take their own paths).
inline void ClampBounds(Activation act, float* lo, float* hi) {
  *lo = -INFINITY;
  *hi = INFINITY;
  if (act == Activation::kRelu) *lo = 0.f;
  if (act == Activation::kRelu6) { *lo = 0.f; *hi = 6.f; }
  if (act == Activation::kReluN1To1) { *lo = -1.f; *hi = 1.f; }
}

#if DC_KERNELS_NEON

// 16 float lanes in four q registers.
struct Acc16 {
  float32x4_t a0, a1, a2, a3;

  static Acc16 Broadcast(float v) {
    const float32x4_t b = vdupq_n_f32(v);
    return {b, b, b, b};
  }
  // lanes += v * x[0..16)
  inline void Fma(float v, const float* x) {
#if defined(__aarch64__)
    a0 = vfmaq_n_f32(a0, vld1q_f32(x), v);
    a1 = vfmaq_n_f32(a1, vld1q_f32(x + 4), v);
    a2 = vfmaq_n_f32(a2, vld1q_f32(x + 8), v);
    a3 = vfmaq_n_f32(a3, vld1q_f32(x + 12), v);
#else  // 32-bit ARM: no vfmaq_n_f32
    a0 = vmlaq_n_f32(a0, vld1q_f32(x), v);
    a1 = vmlaq_n_f32(a1, vld1q_f32(x + 4), v);
    a2 = vmlaq_n_f32(a2, vld1q_f32(x + 8), v);
    a3 = vmlaq_n_f32(a3, vld1q_f32(x + 12), v);
#endif
  }
  // Applies `act` to every lane and writes the lanes to out[0..16).
  inline void ActivateStore(Activation act, float* out) const {
    float32x4_t r0 = a0, r1 = a1, r2 = a2, r3 = a3;
    if (act != Activation::kNone && act != Activation::kTanh) {
      float lo, hi;
      ClampBounds(act, &lo, &hi);
      const float32x4_t vlo = vdupq_n_f32(lo), vhi = vdupq_n_f32(hi);
      r0 = vminq_f32(vmaxq_f32(r0, vlo), vhi);
      r1 = vminq_f32(vmaxq_f32(r1, vlo), vhi);
      r2 = vminq_f32(vmaxq_f32(r2, vlo), vhi);
      r3 = vminq_f32(vmaxq_f32(r3, vlo), vhi);
    }
    vst1q_f32(out, r0);
    vst1q_f32(out + 4, r1);
    vst1q_f32(out + 8, r2);
    vst1q_f32(out + 12, r3);
    if (act == Activation::kTanh)
      for (int k = 0; k < kLanes; ++k) out[k] = std::tanh(out[k]);
  }
};

// y[0..n) = act(y[0..n)) in place.
inline void ActivateInPlace(float* y, size_t n, Activation act) {
  if (act == Activation::kNone) return;
  if (act == Activation::kTanh) {
    for (size_t i = 0; i < n; ++i) y[i] = std::tanh(y[i]);
    return;
  }
  float lo, hi;
  ClampBounds(act, &lo, &hi);
  const float32x4_t vlo = vdupq_n_f32(lo), vhi = vdupq_n_f32(hi);
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vminq_f32(vmaxq_f32(vld1q_f32(y + i), vlo), vhi));
  for (; i < n; ++i) y[i] = std::min(hi, std::max(lo, y[i]));
}

#else  // portable

// GCC/Clang vector extension: 8 floats. The compiler lowers it to whatever the target has (two SSE registers
// on baseline x86-64, one AVX register in the AVX2 clones, scalars elsewhere). Why not a float[16] loop: GCC
// then vectorises the *outer* (column) loop of the kernels with permutes and keeps the accumulator in
// memory, which measured 4x slower on LeNet-5's convolutions.
typedef float Vec8 __attribute__((vector_size(32)));
// Every function taking or returning Vec8 is always_inline, so no Vec8 crosses a call boundary and GCC's
// note that AVX vectors change the calling convention does not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

__attribute__((always_inline)) inline Vec8 Load8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof v);  // unaligned load without aliasing issues
  return v;
}

struct Acc16 {
  Vec8 lo, hi;

  __attribute__((always_inline)) static Acc16 Broadcast(float v) {
    const Vec8 b = {v, v, v, v, v, v, v, v};
    return {b, b};
  }
  __attribute__((always_inline)) inline void Fma(float v, const float* x) {
    lo += v * Load8(x);
    hi += v * Load8(x + 8);
  }
  __attribute__((always_inline)) inline void ActivateStore(Activation act, float* out) const {
    std::memcpy(out, &lo, sizeof lo);
    std::memcpy(out + 8, &hi, sizeof hi);
    if (act != Activation::kNone)
      for (int k = 0; k < kLanes; ++k) out[k] = Activate(out[k], act);
  }
};
#pragma GCC diagnostic pop

inline void ActivateInPlace(float* y, size_t n, Activation act) {
  if (act == Activation::kNone) return;
  for (size_t i = 0; i < n; ++i) y[i] = Activate(y[i], act);
}

#endif  // DC_KERNELS_NEON

// Which inner loops this build runs now: "neon", "avx2" or "portable".
const char* PathName();

}  // namespace dc::kernels::simd

#endif  // DC_KERNELS_NEON_MATH_H_
