// Loading and checking an op's compressed weights (see weights.h).
#include "kernels/weights.h"

#include "kernels/block_fully_connected.h"

#include <new>
#include <string>
#include <utility>

namespace dc::kernels {

Status ValidateSparseMatrix(const codec::SparseMatrix& w) {
  if (w.rows < 0 || w.cols <= 0) return Status::Error("sparse weights have an empty or negative shape");
  if (w.row_ptr.size() != static_cast<size_t>(w.rows) + 1 || w.row_ptr[0] != 0)
    return Status::Error("sparse weights: row_ptr has the wrong length or does not start at 0");
  if (w.delta.size() != w.code.size() || w.row_ptr.back() != w.delta.size())
    return Status::Error("sparse weights: delta/code lengths disagree with row_ptr");
  // An all-zero (fully pruned) layer has no entries and may have no centroids.
  if (w.codebook.size() > 256 || (w.codebook.empty() && !w.delta.empty()))
    return Status::Error("sparse weights: codebook must have 1..256 entries, has " +
                         std::to_string(w.codebook.size()));
  for (int64_t r = 0; r < w.rows; ++r) {
    if (w.row_ptr[r + 1] < w.row_ptr[r]) return Status::Error("sparse weights: row_ptr decreases");
    int64_t col = -1;
    for (uint32_t e = w.row_ptr[r]; e < w.row_ptr[r + 1]; ++e) {
      col += w.delta[e] == 0 ? codec::kSparseFillerStep : w.delta[e];
      if (col >= w.cols)
        return Status::Error("sparse weights: row " + std::to_string(r) + " steps past column " +
                             std::to_string(w.cols - 1));
      if (w.code[e] >= w.codebook.size())
        return Status::Error("sparse weights: codebook index out of range in row " + std::to_string(r));
    }
  }
  return Status();
}

bool DecodesToBlocks(const codec::BlobInfo& info, const WeightsSpec& spec) {
  return info.block_layout && spec.accept_block && !spec.dense;
}

WeightsResult OpenWeights(const uint8_t* data, size_t size, const WeightsSpec& spec, codec::ParsedBlob* blob) {
  WeightsResult result;
  const codec::Status st = codec::OpenBlob(data, size, blob);
  if (!st.ok()) return {WeightsStage::kHeader, st.message(), 0};
  const codec::BlobInfo& info = blob->info();
  const bool shape_ok = spec.shape.empty() ? (spec.rank < 0 || info.shape.size() == static_cast<size_t>(spec.rank))
                                           : info.shape == spec.shape;
  if (!shape_ok) return {WeightsStage::kShape, "", 0};
  result.needed_bytes = spec.dense                     ? codec::DenseDecodeBytes(info)
                        : DecodesToBlocks(info, spec) ? codec::BlockSparseDecodeBytes(info)
                                                      : codec::SparseDecodeBytes(info);
  if (result.needed_bytes > spec.max_bytes) result.stage = WeightsStage::kBudget;
  return result;
}

WeightsResult DecodeWeights(const codec::ParsedBlob& blob, bool as_dense, codec::SparseMatrix* sparse,
                            std::vector<float>* dense, codec::BlockSparseMatrix* block) {
  if (as_dense) {
    try {
      dense->resize(static_cast<size_t>(blob.info().num_elements));
    } catch (const std::bad_alloc&) {
      return {WeightsStage::kDecode, "out of memory allocating the dense weights", 0};
    }
    const codec::Status st = codec::DecodeDense(blob, dense->data(), dense->size());
    if (!st.ok()) return {WeightsStage::kDecode, st.message(), 0};
    return {};
  }
  if (block != nullptr && blob.info().block_layout) {
    const codec::Status st = codec::DecodeBlockSparse(blob, block);
    if (!st.ok()) return {WeightsStage::kDecode, st.message(), 0};
    const Status valid = ValidateBlockSparseMatrix(*block);
    if (!valid.ok()) return {WeightsStage::kInvalid, valid.message(), 0};
    WeightsResult result;
    result.block = true;
    return result;
  }
  const codec::Status st = codec::DecodeSparse(blob, sparse);
  if (!st.ok()) return {WeightsStage::kDecode, st.message(), 0};
  const Status valid = ValidateSparseMatrix(*sparse);
  if (!valid.ok()) return {WeightsStage::kInvalid, valid.message(), 0};
  return {};
}

WeightsResult LoadWeights(const uint8_t* data, size_t size, const WeightsSpec& spec, codec::SparseMatrix* sparse,
                          std::vector<float>* dense, codec::BlobInfo* info, codec::BlockSparseMatrix* block) {
  codec::ParsedBlob blob;
  WeightsResult opened = OpenWeights(data, size, spec, &blob);
  if (info != nullptr) *info = blob.info();
  if (!opened.ok()) return opened;
  WeightsResult decoded =
      DecodeWeights(blob, spec.dense, sparse, dense, DecodesToBlocks(blob.info(), spec) ? block : nullptr);
  decoded.needed_bytes = opened.needed_bytes;
  return decoded;
}

}  // namespace dc::kernels
