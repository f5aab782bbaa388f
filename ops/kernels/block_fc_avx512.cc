// Block-sparse FC loops with AVX-512 (F, BW, DQ, VL): the codebook lives in one or two zmm registers and 16
// codes become 16 weights in one permute (vpermps for up to 16 entries, vpermt2ps for up to 32); larger
// codebooks use a gather. Called only on CPUs that have these features (block_fully_connected.cc checks).
#include "kernels/block_fc_plan.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 intrinsics start from `__m512 __Y = __Y` (an undefined value on purpose), which its
// -Wmaybe-uninitialized reports once they are inlined into functions with a target attribute (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#define DC_BLOCK_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define DC_BLOCK_INLINE DC_BLOCK_TARGET __attribute__((always_inline)) inline

#include "kernels/block_fc_loops.h"

namespace dc::kernels::block {
namespace {

enum class Lookup { kOneRegister, kTwoRegisters, kGather };

template <Lookup kLookup>
class Avx512Ops {
 public:
  using V = __m512;

  DC_BLOCK_INLINE explicit Avx512Ops(const BlockPlan& plan)
      : table_(plan.table.data()), t0_(_mm512_loadu_ps(table_)), t1_(_mm512_loadu_ps(table_ + 16)) {}

  DC_BLOCK_INLINE V Zero() const { return _mm512_setzero_ps(); }
  DC_BLOCK_INLINE V Add(V a, V b) const { return _mm512_add_ps(a, b); }
  DC_BLOCK_INLINE V Fma(V a, V b, V acc) const { return _mm512_fmadd_ps(a, b, acc); }
  DC_BLOCK_INLINE float Sum(V v) const { return _mm512_reduce_add_ps(v); }
  // The four sums reduced together: 8 shuffles instead of the 16 of four Sum calls (shuffles share a port
  // with the lookups' permutes, and short groups, e.g. a 1x1 conv's rows, end often).
  DC_BLOCK_INLINE void Sum4(V a, V b, V c, V d, float* out) const {
    const V ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    const V cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    // 128-bit quarter k holds four partial sums of vector k.
    V q = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    q = _mm512_add_ps(q, _mm512_permute_ps(q, 0x4E));
    q = _mm512_add_ps(q, _mm512_permute_ps(q, 0xB1));
    alignas(64) float lanes[kVectorLanes];
    _mm512_store_ps(lanes, q);
    for (int k = 0; k < 4; ++k) out[k] = lanes[4 * k];
  }
  DC_BLOCK_INLINE void Store(float* out, V v) const { _mm512_storeu_ps(out, v); }

  // One 64-byte load holds four vectors' codes, vector k's in byte k of every dword: a shift (not a
  // shuffle, which competes with the permutes for the same unit) brings each to the dword's low bits, and
  // the permutes read only the low 4 or 5 index bits.
  DC_BLOCK_INLINE void Weights4(const uint8_t* codes, V& w0, V& w1, V& w2, V& w3) const {
    const __m512i dwords = _mm512_loadu_si512(codes);
    w0 = Lookup16(dwords);
    w1 = Lookup16(_mm512_srli_epi32(dwords, 8));
    w2 = Lookup16(_mm512_srli_epi32(dwords, 16));
    w3 = Lookup16(_mm512_srli_epi32(dwords, 24));
  }

  template <int L>
  DC_BLOCK_INLINE V LoadX(const float* x, const uint32_t* s) const {
    if constexpr (L == 16) {
      return _mm512_loadu_ps(x + s[0]);
    } else if constexpr (L == 8) {
      return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(x + s[0])), _mm256_loadu_ps(x + s[1]), 1);
    } else {
      const __m256 lo = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(x + s[0])), _mm_loadu_ps(x + s[1]), 1);
      const __m256 hi = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(x + s[2])), _mm_loadu_ps(x + s[3]), 1);
      return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
    }
  }

  template <int L>
  DC_BLOCK_INLINE V BroadcastX(const float* x, const uint32_t* s) const {
    if constexpr (L == 16) {
      return _mm512_set1_ps(x[s[0]]);
    } else if constexpr (L == 8) {
      return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(x[s[0]])), _mm256_set1_ps(x[s[1]]), 1);
    } else {
      // x[s0..s3] in one xmm, then each spread over its four lanes by one permute.
      const __m128 four = _mm_insert_ps(_mm_insert_ps(_mm_insert_ps(_mm_load_ss(x + s[0]), _mm_load_ss(x + s[1]), 0x10),
                                                      _mm_load_ss(x + s[2]), 0x20),
                                        _mm_load_ss(x + s[3]), 0x30);
      const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
      return _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(four));
    }
  }

 private:
  DC_BLOCK_INLINE V Lookup16(__m512i index) const {
    if constexpr (kLookup == Lookup::kOneRegister) {
      return _mm512_permutexvar_ps(index, t0_);
    } else if constexpr (kLookup == Lookup::kTwoRegisters) {
      return _mm512_permutex2var_ps(t0_, index, t1_);
    } else {
      return _mm512_i32gather_ps(_mm512_and_si512(index, _mm512_set1_epi32(0xFF)), table_, 4);
    }
  }

  const float* table_;
  __m512 t0_, t1_;
};

}  // namespace

void BlockGroupsAvx512(const BlockArgs& args) {
  const int n = args.plan->codebook_size;
  if (n <= 16) return GroupsAnyShape<Avx512Ops<Lookup::kOneRegister>>(args);
  if (n <= 32) return GroupsAnyShape<Avx512Ops<Lookup::kTwoRegisters>>(args);
  GroupsAnyShape<Avx512Ops<Lookup::kGather>>(args);
}

}  // namespace dc::kernels::block

#else  // not x86-64: never called (block_fully_connected.cc dispatches only on x86-64)

namespace dc::kernels::block {
void BlockGroupsAvx512(const BlockArgs& args) { BlockGroupsPortable(args); }
}  // namespace dc::kernels::block

#endif
