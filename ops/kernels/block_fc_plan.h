// The form the block-sparse FC loops run on (built once by BlockFullyConnectedWeights::Init) and the entry
// points of the per-ISA loop files (block_fc_portable.cc, block_fc_avx2.cc, block_fc_avx512.cc,
// block_fc_neon.cc). Internal to the kernels library.
#ifndef DC_KERNELS_BLOCK_FC_PLAN_H_
#define DC_KERNELS_BLOCK_FC_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "dc_codec.h"
#include "kernels/base.h"

namespace dc::kernels::block {

// Every loop works on 16 weights at a time: one block of 16, two of 8 or four of 4 ("a vector").
constexpr int kVectorLanes = 16;

// Entries of the padded codebook: every code indexes it, and the permute / gather / table lookups may read
// any of its entries.
constexpr int kTableEntries = 256;

// Input rows copied (and padded) into scratch per pass, which bounds the scratch size for any batch.
constexpr int64_t kBatchChunk = 8;

// The block-sparse matrix regrouped in whole vectors, four per step of the loops. A group (kCols: a row;
// kRows: a band of block_len rows) whose block count is not a multiple of 4 * 16 / block_len ends with
// padding blocks whose start is `zero_start`: there x holds zeros (the loops read x from a padded copy), so
// padding adds nothing and the loops need no tail code. The same zeros complete kCols blocks that reach
// past the last column. Codes are stored per step of four vectors, interleaved: byte 4 * i + k of a step's
// 64 is lane i of its vector k, so that one 64-byte load plus shifts (x86) or one vld4 (NEON) splits them.
struct BlockPlan {
  int64_t rows = 0, cols = 0;
  codec::BlockAxis axis = codec::BlockAxis::kCols;
  int block_len = 16;
  int codebook_size = 0;
  int64_t x_len = 0;        // floats per padded input row: cols rounded up to block_len, then at least
                            // block_len zeros, rounded up to a multiple of 16
  uint32_t zero_start = 0;  // first of those zeros
  std::vector<uint32_t> group_ptr;  // NumGroups + 1 offsets, in vectors, multiples of 4
  std::vector<uint32_t> start;      // 16 / block_len block starts per vector
  std::vector<uint8_t> codes;       // 16 codes per vector, interleaved per four vectors (above)
  std::vector<float> table;         // the codebook, zero-padded to kTableEntries
  std::vector<uint8_t> planes;      // byte k of table[e] at planes[k * kTableEntries + e] (NEON lookups)

  int64_t NumGroups() const {
    return axis == codec::BlockAxis::kCols ? rows : (rows + block_len - 1) / block_len;
  }
  size_t ResidentBytes() const {
    return group_ptr.capacity() * sizeof(uint32_t) + start.capacity() * sizeof(uint32_t) + codes.capacity() +
           table.capacity() * sizeof(float) + planes.capacity();
  }
};

// One call's work: groups [g0, g1) for nb batch rows. Row b of the input is x + b * x_stride (padded to
// plan->x_len), its output row y + b * y_stride.
struct BlockArgs {
  const BlockPlan* plan = nullptr;
  const float* bias = nullptr;
  const float* x = nullptr;
  int64_t x_stride = 0;
  float* y = nullptr;
  int64_t y_stride = 0;
  int64_t nb = 0;
  Activation act = Activation::kNone;
  int64_t g0 = 0, g1 = 0;
};

// The loops of each path. The x86-64 ones exist only in x86-64 builds and must only be called on CPUs with
// the features they are compiled for (BlockGroupsAvx2: AVX2+FMA; BlockGroupsAvx512: AVX-512 F/BW/DQ/VL);
// BlockGroupsNeon only in builds where BlockNeonBuilt() is true.
void BlockGroupsPortable(const BlockArgs& args);
void BlockGroupsAvx2(const BlockArgs& args);
void BlockGroupsAvx512(const BlockArgs& args);
void BlockGroupsNeon(const BlockArgs& args);
bool BlockNeonBuilt();

}  // namespace dc::kernels::block

#endif  // DC_KERNELS_BLOCK_FC_PLAN_H_
