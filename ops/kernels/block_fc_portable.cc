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
  DC_BLOCK_INLINE void Store(float* out, const V& v) const { std::memcpy(out, &v, sizeof v); }

  DC_BLOCK_INLINE void Weights4(const uint8_t* codes, V& w0, V& w1, V& w2, V& w3) const {
    float w[4][kVectorLanes];
    for (int i = 0; i < kVectorLanes; ++i)
      for (int k = 0; k < 4; ++k) w[k][i] = table_[codes[4 * i + k]];
    std::memcpy(&w0, w[0], sizeof w0);
    std::memcpy(&w1, w[1], sizeof w1);
    std::memcpy(&w2, w[2], sizeof w2);
    std::memcpy(&w3, w[3], sizeof w3);
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
    float lanes[kVectorLanes];
    for (int i = 0; i < kVectorLanes; ++i) lanes[i] = x[s[i / L]];
    V v;
    std::memcpy(&v, lanes, sizeof v);
    return v;
  }

 private:
  const float* table_;
};

}  // namespace

void BlockGroupsPortable(const BlockArgs& args) { GroupsAnyShape<PortableOps>(args); }

}  // namespace dc::kernels::block

