// Block-sparse FC loops without intrinsics: the compiler's own vectors (GCC/Clang vector extension) for the
// 16 lanes and a scalar table lookup per code. What x86-64 CPUs without AVX2 run (and every path's tests
// compare against), and ARM builds without NEON.
#include <cstring>

#include "kernels/block_fc_plan.h"

#define DC_BLOCK_TARGET
#define DC_BLOCK_INLINE __attribute__((always_inline)) inline

// Every function taking or returning the 64-byte vector is always_inline, so none crosses a call boundary
// and GCC's note that such vectors change the calling convention does not apply. Not popped: GCC reports it
// at the end of the file.
#pragma GCC diagnostic ignored "-Wpsabi"

#include "kernels/block_fc_loops.h"

namespace dc::kernels::block {
namespace {

typedef float Vec16 __attribute__((vector_size(kVectorLanes * sizeof(float))));

class PortableOps {
 public:
  using V = Vec16;

  explicit PortableOps(const BlockPlan& plan) : table_(plan.table.data()) {}

  DC_BLOCK_INLINE V Zero() const { return V{}; }
  DC_BLOCK_INLINE V Add(const V& a, const V& b) const { return a + b; }
  DC_BLOCK_INLINE V Fma(const V& a, const V& b, const V& acc) const { return acc + a * b; }
  DC_BLOCK_INLINE float Sum(const V& v) const {
    float lanes[kVectorLanes];
    std::memcpy(lanes, &v, sizeof lanes);
    float sum = 0.f;
    for (float f : lanes) sum += f;
    return sum;
  }
  DC_BLOCK_INLINE void Sum4(const V& a, const V& b, const V& c, const V& d, float* out) const {
    out[0] = Sum(a);
    out[1] = Sum(b);
    out[2] = Sum(c);
    out[3] = Sum(d);
  }
  DC_BLOCK_INLINE void Store(float* out, const V& v) const { std::memcpy(out, &v, sizeof v); }

  // Vectors built from scalars in registers: writing the 16 weights to memory and loading them back as a
  // vector stalls on every load (the store buffer cannot forward several small stores to one wide load),
  // which measured 5x slower.
  DC_BLOCK_INLINE void Weights4(const uint8_t* codes, V& w0, V& w1, V& w2, V& w3) const {
    w0 = Lookup(codes);
    w1 = Lookup(codes + 1);
    w2 = Lookup(codes + 2);
    w3 = Lookup(codes + 3);
  }

  template <int L>
  DC_BLOCK_INLINE V LoadX(const float* x, const uint32_t* s) const {
    V v;
    for (int j = 0; j < kVectorLanes / L; ++j) std::memcpy(reinterpret_cast<char*>(&v) + j * L * sizeof(float),
                                                           x + s[j], L * sizeof(float));
    return v;
  }

  template <int L>
  DC_BLOCK_INLINE V BroadcastX(const float* x, const uint32_t* s) const {
    constexpr int q = L / 4;  // lanes j belong to block j / L: four lanes at a time are one value
    const float a = x[s[0]], b = x[s[1 / q]], c = x[s[2 / q]], d = x[s[3 / q]];
    return V{a, a, a, a, b, b, b, b, c, c, c, c, d, d, d, d};
  }

 private:
  // Lanes i of one vector: codes[4 * i] (the interleaved order of BlockPlan::codes).
  DC_BLOCK_INLINE V Lookup(const uint8_t* c) const {
    const float* t = table_;
    return V{t[c[0]],  t[c[4]],  t[c[8]],  t[c[12]], t[c[16]], t[c[20]], t[c[24]], t[c[28]],
             t[c[32]], t[c[36]], t[c[40]], t[c[44]], t[c[48]], t[c[52]], t[c[56]], t[c[60]]};
  }

  const float* table_;
};

}  // namespace

void BlockGroupsPortable(const BlockArgs& args) { GroupsAnyShape<PortableOps>(args); }

}  // namespace dc::kernels::block

