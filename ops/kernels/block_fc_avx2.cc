// Block-sparse FC loops with AVX2+FMA: 16 lanes as two ymm registers. The codebook lives in 8-entry ymm
// registers; a code picks its entry in each with vpermps (which reads the low three index bits) and blends
// on the higher bits pick the register: one permute for up to 8 entries, two and a blend for 16, four and
// three blends for 32. Larger codebooks use a gather. Called only on CPUs with AVX2 and FMA.
#include "kernels/block_fc_plan.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define DC_BLOCK_TARGET __attribute__((target("avx2,fma")))
#define DC_BLOCK_INLINE DC_BLOCK_TARGET __attribute__((always_inline)) inline

#include "kernels/block_fc_loops.h"

namespace dc::kernels::block {
namespace {

struct Lanes16 {
  __m256 lo, hi;
};

// Table registers a codebook of up to kEntries (8, 16 or 32) needs, or 0 for the gather.
template <int kEntries>
class Avx2Ops {
 public:
  using V = Lanes16;

  DC_BLOCK_INLINE explicit Avx2Ops(const BlockPlan& plan) : table_(plan.table.data()) {
    for (int k = 0; k < 4; ++k) t_[k] = _mm256_loadu_ps(table_ + 8 * k);
  }

  DC_BLOCK_INLINE V Zero() const { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  DC_BLOCK_INLINE V Add(V a, V b) const { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  DC_BLOCK_INLINE V Fma(V a, V b, V acc) const {
    return {_mm256_fmadd_ps(a.lo, b.lo, acc.lo), _mm256_fmadd_ps(a.hi, b.hi, acc.hi)};
  }
  DC_BLOCK_INLINE float Sum(V v) const {
    const __m256 s = _mm256_add_ps(v.lo, v.hi);
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  // The four sums reduced together (three horizontal adds instead of four Sum chains).
  DC_BLOCK_INLINE void Sum4(V a, V b, V c, V d, float* out) const {
    const __m256 ab = _mm256_hadd_ps(_mm256_add_ps(a.lo, a.hi), _mm256_add_ps(b.lo, b.hi));
    const __m256 cd = _mm256_hadd_ps(_mm256_add_ps(c.lo, c.hi), _mm256_add_ps(d.lo, d.hi));
    const __m256 q = _mm256_hadd_ps(ab, cd);  // lane k of each 128-bit half: a partial sum of vector k
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1)));
  }
  DC_BLOCK_INLINE void Store(float* out, V v) const {
    _mm256_storeu_ps(out, v.lo);
    _mm256_storeu_ps(out + 8, v.hi);
  }

  // Lanes 0-7 of the four vectors are the first 32 code bytes, lanes 8-15 the next 32; vector k's code is
  // byte k of each dword, brought down by a shift (vpermps and the blends read only the bits they need).
  DC_BLOCK_INLINE void Weights4(const uint8_t* codes, V& w0, V& w1, V& w2, V& w3) const {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
    const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 32));
    w0 = {Lookup8(lo), Lookup8(hi)};
    w1 = {Lookup8(_mm256_srli_epi32(lo, 8)), Lookup8(_mm256_srli_epi32(hi, 8))};
    w2 = {Lookup8(_mm256_srli_epi32(lo, 16)), Lookup8(_mm256_srli_epi32(hi, 16))};
    w3 = {Lookup8(_mm256_srli_epi32(lo, 24)), Lookup8(_mm256_srli_epi32(hi, 24))};
  }

  template <int L>
  DC_BLOCK_INLINE V LoadX(const float* x, const uint32_t* s) const {
    if constexpr (L == 16) {
      return {_mm256_loadu_ps(x + s[0]), _mm256_loadu_ps(x + s[0] + 8)};
    } else if constexpr (L == 8) {
      return {_mm256_loadu_ps(x + s[0]), _mm256_loadu_ps(x + s[1])};
    } else {
      return {_mm256_loadu2_m128(x + s[1], x + s[0]), _mm256_loadu2_m128(x + s[3], x + s[2])};
    }
  }

  template <int L>
  DC_BLOCK_INLINE V BroadcastX(const float* x, const uint32_t* s) const {
    if constexpr (L == 16) {
      const __m256 v = _mm256_set1_ps(x[s[0]]);
      return {v, v};
    } else if constexpr (L == 8) {
      return {_mm256_set1_ps(x[s[0]]), _mm256_set1_ps(x[s[1]])};
    } else {
      return {_mm256_set_m128(_mm_set1_ps(x[s[1]]), _mm_set1_ps(x[s[0]])),
              _mm256_set_m128(_mm_set1_ps(x[s[3]]), _mm_set1_ps(x[s[2]]))};
    }
  }

 private:
  // Entries of 8 codes (in the low byte of each dword; higher bytes are ignored): vpermps per table
  // register, blendv on the index bit that selects the register (shifted into the sign bit, which is what
  // blendv reads).
  DC_BLOCK_INLINE __m256 Lookup8(__m256i index) const {
    if constexpr (kEntries == 0) {
      return _mm256_i32gather_ps(table_, _mm256_and_si256(index, _mm256_set1_epi32(0xFF)), 4);
    } else {
      const __m256 a = _mm256_permutevar8x32_ps(t_[0], index);
      if constexpr (kEntries == 8) return a;
      const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(index, 28));
      const __m256 low16 = _mm256_blendv_ps(a, _mm256_permutevar8x32_ps(t_[1], index), bit3);
      if constexpr (kEntries == 16) return low16;
      const __m256 high16 = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t_[2], index),
                                             _mm256_permutevar8x32_ps(t_[3], index), bit3);
      return _mm256_blendv_ps(low16, high16, _mm256_castsi256_ps(_mm256_slli_epi32(index, 27)));
    }
  }

  const float* table_;
  __m256 t_[4];
};

}  // namespace

void BlockGroupsAvx2(const BlockArgs& args) {
  const int n = args.plan->codebook_size;
  if (n <= 8) return GroupsAnyShape<Avx2Ops<8>>(args);
  if (n <= 16) return GroupsAnyShape<Avx2Ops<16>>(args);
  if (n <= 32) return GroupsAnyShape<Avx2Ops<32>>(args);
  GroupsAnyShape<Avx2Ops<0>>(args);
}

}  // namespace dc::kernels::block

#else  // not x86-64: never called (block_fully_connected.cc dispatches only on x86-64)

namespace dc::kernels::block {
void BlockGroupsAvx2(const BlockArgs& args) { BlockGroupsPortable(args); }
}  // namespace dc::kernels::block

#endif
