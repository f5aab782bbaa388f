// Block-sparse FC loops with AArch64 NEON: 16 lanes as four q registers. The codebook is kept as four byte
// planes (byte k of every centroid); one table lookup (tbl) per plane turns 16 codes into byte k of their 16
// weights, and two rounds of zips reassemble the floats: tbl on one register covers 16 entries, on two 32,
// on four 64. Larger codebooks use a scalar lookup. Little-endian AArch64 only (every Android arm64-v8a
// and aarch64 Linux build); other targets run the portable loops.
#include "kernels/block_fc_plan.h"

#if defined(__aarch64__) && defined(__ARM_NEON) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#include <arm_neon.h>

#define DC_BLOCK_TARGET
#define DC_BLOCK_INLINE __attribute__((always_inline)) inline

#include "kernels/block_fc_loops.h"

namespace dc::kernels::block {
namespace {

struct Lanes16 {
  float32x4_t q[4];
};

// kEntries: 16, 32 or 64 (table lookups on that many plane bytes), 0 for the scalar lookup.
template <int kEntries>
class NeonOps {
 public:
  using V = Lanes16;

  explicit NeonOps(const BlockPlan& plan) : table_(plan.table.data()) {
    for (int k = 0; k < 4; ++k)
      planes_[k] = vld1q_u8_x4(plan.planes.data() + static_cast<size_t>(k) * kTableEntries);
  }

  DC_BLOCK_INLINE V Zero() const {
    const float32x4_t z = vdupq_n_f32(0.f);
    return {{z, z, z, z}};
  }
  DC_BLOCK_INLINE V Add(V a, V b) const {
    return {{vaddq_f32(a.q[0], b.q[0]), vaddq_f32(a.q[1], b.q[1]), vaddq_f32(a.q[2], b.q[2]),
             vaddq_f32(a.q[3], b.q[3])}};
  }
  DC_BLOCK_INLINE V Fma(V a, V b, V acc) const {
    return {{vfmaq_f32(acc.q[0], a.q[0], b.q[0]), vfmaq_f32(acc.q[1], a.q[1], b.q[1]),
             vfmaq_f32(acc.q[2], a.q[2], b.q[2]), vfmaq_f32(acc.q[3], a.q[3], b.q[3])}};
  }
  DC_BLOCK_INLINE float Sum(V v) const {
    return vaddvq_f32(vaddq_f32(vaddq_f32(v.q[0], v.q[1]), vaddq_f32(v.q[2], v.q[3])));
  }
  // The four sums reduced together: pairwise adds leave lane k holding vector k's sum.
  DC_BLOCK_INLINE void Sum4(V a, V b, V c, V d, float* out) const {
    auto fold = [](V v) { return vaddq_f32(vaddq_f32(v.q[0], v.q[1]), vaddq_f32(v.q[2], v.q[3])); };
    vst1q_f32(out, vpaddq_f32(vpaddq_f32(fold(a), fold(b)), vpaddq_f32(fold(c), fold(d))));
  }
  DC_BLOCK_INLINE void Store(float* out, V v) const {
    for (int t = 0; t < 4; ++t) vst1q_f32(out + 4 * t, v.q[t]);
  }

  // vld4q_u8 splits the 64 interleaved codes into the four vectors' 16 codes.
  DC_BLOCK_INLINE void Weights4(const uint8_t* codes, V& w0, V& w1, V& w2, V& w3) const {
    const uint8x16x4_t index = vld4q_u8(codes);
    w0 = Weights(index.val[0]);
    w1 = Weights(index.val[1]);
    w2 = Weights(index.val[2]);
    w3 = Weights(index.val[3]);
  }

  template <int L>
  DC_BLOCK_INLINE V LoadX(const float* x, const uint32_t* s) const {
    V v;
    for (int t = 0; t < 4; ++t) v.q[t] = vld1q_f32(x + s[4 * t / L] + (4 * t) % L);
    return v;
  }

  template <int L>
  DC_BLOCK_INLINE V BroadcastX(const float* x, const uint32_t* s) const {
    V v;
    for (int t = 0; t < 4; ++t) v.q[t] = vdupq_n_f32(x[s[4 * t / L]]);
    return v;
  }

 private:
  DC_BLOCK_INLINE V Weights(uint8x16_t index) const {
    if constexpr (kEntries == 0) {
      uint8_t c[kVectorLanes];
      vst1q_u8(c, index);
      float w[kVectorLanes];
      for (int i = 0; i < kVectorLanes; ++i) w[i] = table_[c[i]];
      return {{vld1q_f32(w), vld1q_f32(w + 4), vld1q_f32(w + 8), vld1q_f32(w + 12)}};
    } else {
      const uint8x16_t b0 = Plane(0, index), b1 = Plane(1, index), b2 = Plane(2, index), b3 = Plane(3, index);
      // (byte 0, byte 1) and (byte 2, byte 3) of each weight as 16-bit halves, then the halves as floats.
      const uint16x8_t lo01 = vreinterpretq_u16_u8(vzip1q_u8(b0, b1)), hi01 = vreinterpretq_u16_u8(vzip2q_u8(b0, b1));
      const uint16x8_t lo23 = vreinterpretq_u16_u8(vzip1q_u8(b2, b3)), hi23 = vreinterpretq_u16_u8(vzip2q_u8(b2, b3));
      return {{vreinterpretq_f32_u16(vzip1q_u16(lo01, lo23)), vreinterpretq_f32_u16(vzip2q_u16(lo01, lo23)),
               vreinterpretq_f32_u16(vzip1q_u16(hi01, hi23)), vreinterpretq_f32_u16(vzip2q_u16(hi01, hi23))}};
    }
  }

  DC_BLOCK_INLINE uint8x16_t Plane(int k, uint8x16_t index) const {
    if constexpr (kEntries == 16) {
      return vqtbl1q_u8(planes_[k].val[0], index);
    } else if constexpr (kEntries == 32) {
      const uint8x16x2_t two = {{planes_[k].val[0], planes_[k].val[1]}};
      return vqtbl2q_u8(two, index);
    } else {
      return vqtbl4q_u8(planes_[k], index);
    }
  }

  const float* table_;
  uint8x16x4_t planes_[4];
};

}  // namespace

bool BlockNeonBuilt() { return true; }

void BlockGroupsNeon(const BlockArgs& args) {
  const int n = args.plan->codebook_size;
  if (n <= 16) return GroupsAnyShape<NeonOps<16>>(args);
  if (n <= 32) return GroupsAnyShape<NeonOps<32>>(args);
  if (n <= 64) return GroupsAnyShape<NeonOps<64>>(args);
  GroupsAnyShape<NeonOps<0>>(args);
}

}  // namespace dc::kernels::block

#else  // no AArch64 NEON: never called (BlockNeonBuilt() is false)

namespace dc::kernels::block {
bool BlockNeonBuilt() { return false; }
void BlockGroupsNeon(const BlockArgs& args) { BlockGroupsPortable(args); }
}  // namespace dc::kernels::block

#endif
