// Block-sparse FC: validation, the scalar reference, and BlockFullyConnectedWeights.
#include "kernels/block_fully_connected.h"

#include <algorithm>
#include <string>
#include <utility>

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

Status BlockFullyConnectedWeights::Init(BlockSparseMatrix w) {
  Status valid = ValidateBlockSparseMatrix(w);
  if (!valid.ok()) return valid;
  stored_weights_ = 0;
  const int64_t L = w.block_len;
  for (int64_t g = 0; g < w.NumGroups(); ++g)
    for (uint32_t k = w.group_ptr[g]; k < w.group_ptr[g + 1]; ++k) {
      const int64_t edge = w.axis == BlockAxis::kCols ? w.cols - w.block_start[k] : w.rows - g * L;
      stored_weights_ += static_cast<uint64_t>(std::min<int64_t>(L, edge));
    }
  w_ = std::move(w);
  return Status();
}

const char* BlockFullyConnectedWeights::path_name() const { return "portable"; }

size_t BlockFullyConnectedWeights::ScratchFloats(int64_t) const { return 0; }

void BlockFullyConnectedWeights::Run(const float* bias, const float* x, int64_t batch, float* y, Activation act,
                                     float*, RowSplitter*) const {
  BlockFullyConnectedReference(w_, bias, x, batch, y, act);
}

size_t BlockFullyConnectedWeights::ResidentBytes() const { return w_.ResidentBytes(); }

}  // namespace dc::kernels
