// Block-sparse FC: validation, the scalar reference, and BlockFullyConnectedWeights.
#include "kernels/block_fully_connected.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "kernels/cpu_dispatch.h"
#include "kernels/row_splitter.h"

namespace dc::kernels {

using codec::BlockAxis;
using codec::BlockSparseMatrix;

Status ValidateBlockSparseMatrix(const BlockSparseMatrix& w) {
  if (w.axis != BlockAxis::kCols && w.axis != BlockAxis::kRows)
    return Status::Error("block-sparse weights: unknown block axis");
  if (w.block_len != 4 && w.block_len != 8 && w.block_len != 16)
    return Status::Error("block-sparse weights: block length " + std::to_string(w.block_len) +
                         " (expected 4, 8 or 16)");
  if (w.rows < 0 || w.cols < 0 || w.rows > int64_t{0xFFFFFFFF} || w.cols > int64_t{0xFFFFFFFF})
    return Status::Error("block-sparse weights: bad shape");
  const int64_t groups = w.NumGroups();
  if (w.group_ptr.size() != static_cast<size_t>(groups) + 1 || w.group_ptr[0] != 0 ||
      w.group_ptr.back() != w.block_start.size())
    return Status::Error("block-sparse weights: group offsets do not match the block count");
  if (w.codes.size() != w.block_start.size() * static_cast<size_t>(w.block_len))
    return Status::Error("block-sparse weights: " + std::to_string(w.codes.size()) + " codes for " +
                         std::to_string(w.block_start.size()) + " blocks of " + std::to_string(w.block_len));
  if (w.codebook.size() > 256 || (w.codebook.empty() && !w.block_start.empty()))
    return Status::Error("block-sparse weights: codebook of " + std::to_string(w.codebook.size()) + " entries");
  for (int64_t g = 0; g < groups; ++g) {
    const uint32_t begin = w.group_ptr[g], end = w.group_ptr[g + 1];
    if (end < begin) return Status::Error("block-sparse weights: group offsets decrease");
    int64_t previous = -1;
    for (uint32_t b = begin; b < end; ++b) {
      const int64_t start = w.block_start[b];
      if (start <= previous || start >= w.cols ||
          (w.axis == BlockAxis::kCols && start % w.block_len != 0))
        return Status::Error("block-sparse weights: block start " + std::to_string(start) + " out of order, "
                             "unaligned or outside " + std::to_string(w.cols) + " columns");
      previous = start;
    }
  }
  for (uint8_t code : w.codes)
    if (code >= w.codebook.size()) return Status::Error("block-sparse weights: code outside the codebook");
  return Status();
}

void BlockFullyConnectedReference(const BlockSparseMatrix& w, const float* bias, const float* x, int64_t batch,
                                  float* y, Activation act) {
  const int64_t L = w.block_len;
  for (int64_t b = 0; b < batch; ++b) {
    const float* xb = x + b * w.cols;
    float* yb = y + b * w.rows;
    for (int64_t r = 0; r < w.rows; ++r) yb[r] = bias ? bias[r] : 0.f;
    for (int64_t g = 0; g < w.NumGroups(); ++g) {
      for (uint32_t k = w.group_ptr[g]; k < w.group_ptr[g + 1]; ++k) {
        const uint8_t* codes = w.codes.data() + static_cast<size_t>(k) * L;
        const int64_t start = w.block_start[k];
        for (int64_t i = 0; i < L; ++i) {
          const int64_t r = w.axis == BlockAxis::kCols ? g : g * L + i;
          const int64_t c = w.axis == BlockAxis::kCols ? start + i : start;
          if (r < w.rows && c < w.cols) yb[r] += w.codebook[codes[i]] * xb[c];
        }
      }
    }
    for (int64_t r = 0; r < w.rows; ++r) yb[r] = Activate(yb[r], act);
  }
}

namespace {

enum class BlockPath { kPortable, kAvx2, kAvx512, kNeon };

// The loops this process runs now: the widest the CPU has and the switches allow (simd::AvxClonesAllowed,
// simd::Avx512ClonesAllowed; on AArch64 simd::PortableOnly), checked per call so tests can switch paths.
BlockPath ChoosePath() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool has_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (has_avx512 && simd::Avx512ClonesAllowed()) return BlockPath::kAvx512;
  if (has_avx2 && simd::AvxClonesAllowed()) return BlockPath::kAvx2;
  return BlockPath::kPortable;
#else
  if (block::BlockNeonBuilt() && !simd::PortableOnly().load(std::memory_order_relaxed)) return BlockPath::kNeon;
  return BlockPath::kPortable;
#endif
}

const char* PathName(BlockPath path) {
  switch (path) {
    case BlockPath::kAvx512: return "avx512";
    case BlockPath::kAvx2: return "avx2";
    case BlockPath::kNeon: return "neon";
    case BlockPath::kPortable: break;
  }
  return "portable";
}

void RunPath(BlockPath path, const block::BlockArgs& args) {
  switch (path) {
    case BlockPath::kAvx512: return block::BlockGroupsAvx512(args);
    case BlockPath::kAvx2: return block::BlockGroupsAvx2(args);
    case BlockPath::kNeon: return block::BlockGroupsNeon(args);
    case BlockPath::kPortable: break;
  }
  block::BlockGroupsPortable(args);
}

// Regroups a validated matrix into whole vectors of 16 / block_len blocks, four vectors per group step
// (padding blocks read the zeros at zero_start), interleaves each step's codes (BlockPlan::codes) and pads
// the codebook into the lookup tables.
Status BuildPlan(const BlockSparseMatrix& w, block::BlockPlan* plan) {
  const int64_t L = w.block_len, per_vector = block::kVectorLanes / L;
  const int64_t padded_cols = (w.cols + L - 1) / L * L;
  if (padded_cols + L > int64_t{0xFFFFFFFF})
    return Status::Error("block-sparse weights: " + std::to_string(w.cols) + " columns are too many");
  plan->rows = w.rows;
  plan->cols = w.cols;
  plan->axis = w.axis;
  plan->block_len = w.block_len;
  plan->codebook_size = static_cast<int>(w.codebook.size());
  // Rows of whole cache lines (16 floats), so that a kCols block of 16 starting at a multiple of 16 is one
  // aligned line: a load split over two lines costs two.
  plan->x_len = (padded_cols + L + block::kVectorLanes - 1) / block::kVectorLanes * block::kVectorLanes;
  plan->zero_start = static_cast<uint32_t>(padded_cols);
  const int64_t groups = w.NumGroups();
  plan->group_ptr.assign(static_cast<size_t>(groups) + 1, 0);
  uint64_t vectors = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const uint64_t group_vectors = (w.group_ptr[g + 1] - w.group_ptr[g] + per_vector - 1) / per_vector;
    vectors += (group_vectors + 3) / 4 * 4;
    if (vectors > 0xFFFFFFFF) return Status::Error("block-sparse weights: too many blocks");
    plan->group_ptr[g + 1] = static_cast<uint32_t>(vectors);
  }
  plan->start.assign(vectors * per_vector, plan->zero_start);
  plan->codes.assign(vectors * block::kVectorLanes, 0);
  for (int64_t g = 0; g < groups; ++g) {
    const size_t first_vector = plan->group_ptr[g];  // a multiple of 4
    for (uint32_t k = w.group_ptr[g]; k < w.group_ptr[g + 1]; ++k) {
      const size_t slot = k - w.group_ptr[g], vector = first_vector + slot / per_vector;
      plan->start[first_vector * per_vector + slot] = w.block_start[k];
      for (int64_t e = 0; e < L; ++e) {
        const size_t lane = (slot % per_vector) * L + e;
        plan->codes[(vector / 4) * 4 * block::kVectorLanes + 4 * lane + vector % 4] = w.codes[size_t{k} * L + e];
      }
    }
  }
  plan->table.assign(block::kTableEntries, 0.f);
  std::copy(w.codebook.begin(), w.codebook.end(), plan->table.begin());
  plan->planes.assign(4 * block::kTableEntries, 0);
  for (int e = 0; e < block::kTableEntries; ++e) {
    uint32_t bits;
    std::memcpy(&bits, &plan->table[e], sizeof bits);
    for (int k = 0; k < 4; ++k) plan->planes[k * block::kTableEntries + e] = static_cast<uint8_t>(bits >> (8 * k));
  }
  return Status();
}

}  // namespace

const char* BlockFullyConnectedPathName() { return PathName(ChoosePath()); }

Status BlockFullyConnectedWeights::Init(BlockSparseMatrix w) {
  Status valid = ValidateBlockSparseMatrix(w);
  if (!valid.ok()) return valid;
  uint64_t stored = 0;
  const int64_t L = w.block_len;
  for (int64_t g = 0; g < w.NumGroups(); ++g)
    for (uint32_t k = w.group_ptr[g]; k < w.group_ptr[g + 1]; ++k) {
      const int64_t edge = w.axis == BlockAxis::kCols ? w.cols - w.block_start[k] : w.rows - g * L;
      stored += static_cast<uint64_t>(std::min<int64_t>(L, edge));
    }
  block::BlockPlan plan;
  Status built = BuildPlan(w, &plan);
  if (!built.ok()) return built;
  plan_ = std::move(plan);
  stored_weights_ = stored;
  return Status();
}

const char* BlockFullyConnectedWeights::path_name() const { return BlockFullyConnectedPathName(); }

size_t BlockFullyConnectedWeights::ScratchFloats(int64_t batch) const {
  if (batch < 1) return 0;
  return static_cast<size_t>(std::min(batch, block::kBatchChunk) * plan_.x_len + block::kVectorLanes);
}

// Each chunk of input rows is copied into scratch padded with zeros (the padding blocks' and the edge
// blocks' reads), then the groups (rows or bands) are split over the threads.
void BlockFullyConnectedWeights::Run(const float* bias, const float* x, int64_t batch, float* y, Activation act,
                                     float* scratch, RowSplitter* pool) const {
  const int64_t rows = plan_.rows, cols = plan_.cols, x_len = plan_.x_len;
  if (batch < 1 || rows == 0) return;
  const BlockPath path = ChoosePath();
  // The first 64-byte boundary in scratch (ScratchFloats leaves room for it).
  const size_t misalignment = reinterpret_cast<uintptr_t>(scratch) % (block::kVectorLanes * sizeof(float));
  if (misalignment % sizeof(float) == 0 && misalignment != 0)
    scratch += (block::kVectorLanes * sizeof(float) - misalignment) / sizeof(float);
  const int64_t min_groups = plan_.axis == BlockAxis::kCols ? 16 : 2;
  for (int64_t b0 = 0; b0 < batch; b0 += block::kBatchChunk) {
    const int64_t nb = std::min(block::kBatchChunk, batch - b0);
    for (int64_t b = 0; b < nb; ++b) {
      float* dst = scratch + b * x_len;
      if (cols > 0) std::memcpy(dst, x + (b0 + b) * cols, sizeof(float) * static_cast<size_t>(cols));
      std::fill(dst + cols, dst + x_len, 0.f);
    }
    block::BlockArgs args;
    args.plan = &plan_;
    args.bias = bias;
    args.x = scratch;
    args.x_stride = x_len;
    args.y = y + b0 * rows;
    args.y_stride = rows;
    args.nb = nb;
    args.act = act;
    SplitRows(pool, plan_.NumGroups(), min_groups, [&](int64_t g0, int64_t g1) {
      block::BlockArgs part = args;
      part.g0 = g0;
      part.g1 = g1;
      RunPath(path, part);
    });
  }
}

void BlockFullyConnectedWeights::RunPaddedRows(const float* bias, const float* x, int64_t batch, float* y,
                                                Activation act) const {
  if (batch < 1 || plan_.rows == 0) return;
  block::BlockArgs args;
  args.plan = &plan_;
  args.bias = bias;
  args.x = x;
  args.x_stride = plan_.x_len;
  args.y = y;
  args.y_stride = plan_.rows;
  args.nb = batch;
  args.act = act;
  args.g0 = 0;
  args.g1 = plan_.NumGroups();
  RunPath(ChoosePath(), args);
}

size_t BlockFullyConnectedWeights::ResidentBytes() const { return plan_.ResidentBytes(); }

}  // namespace dc::kernels
