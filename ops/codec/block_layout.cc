// The block layouts of the format (FORMAT.md, version 2): the delta stream walks a grid of aligned blocks of
// block_len weights, and every stored block carries block_len codes. Decoded here into the kernels'
// BlockSparseMatrix; DecodeDense and DecodeSparse (sparse_layout.cc) expand that form.
#include <new>
#include <utility>

#include "codec_internal.h"

namespace dc {
namespace codec {

using internal::Parsed;
using internal::Str;

namespace internal {

Status DecodeBlockLayout(const uint8_t* data, const Parsed& p, BlockSparseMatrix* out) {
  const BlobInfo& info = p.info;
  if (!info.block_layout) return Status::Error("the blob has no block layout (it stores single weights)");
  std::vector<uint8_t> delta, code;
  Status st = DecodeParsedStreams(data, p, &delta, &code);
  if (!st.ok()) return st;

  BlockSparseMatrix m;
  MatrixDims(info, &m.rows, &m.cols);
  m.axis = info.block_axis;
  m.block_len = info.block_len;
  const int64_t L = info.block_len;
  uint64_t grid_rows, grid_cols;
  BlockGrid(info, &grid_rows, &grid_cols);
  try {
    m.group_ptr.assign(static_cast<size_t>(grid_rows) + 1, 0);
    m.block_start.reserve(static_cast<size_t>(info.num_nonzeros));
    m.codebook.assign(p.codebook.begin(), p.codebook.begin() + info.num_centroids);
  } catch (const std::bad_alloc&) {
    return Status::Error("out of memory building the block-sparse matrix");
  }
  // Grid positions arrive in increasing order, so groups (grid rows) do too: count per group, then sum.
  st = WalkDeltas(info, delta, [&](uint64_t pos, uint64_t) {
    const uint64_t group = pos / grid_cols, cell = pos % grid_cols;
    ++m.group_ptr[group + 1];
    m.block_start.push_back(static_cast<uint32_t>(info.block_axis == BlockAxis::kCols ? cell * L : cell));
  });
  if (!st.ok()) return st;
  for (size_t g = 1; g < m.group_ptr.size(); ++g) m.group_ptr[g] += m.group_ptr[g - 1];

  // Positions past the matrix edge hold code 0, so that a blob has one spelling and kernels may read them.
  for (uint64_t g = 0; g < grid_rows; ++g) {
    for (uint32_t b = m.group_ptr[g]; b < m.group_ptr[g + 1]; ++b) {
      const int64_t inside = info.block_axis == BlockAxis::kCols
                                 ? m.cols - static_cast<int64_t>(m.block_start[b])
                                 : m.rows - static_cast<int64_t>(g) * L;
      for (int64_t i = inside < 0 ? 0 : inside; i < L; ++i) {
        if (code[static_cast<size_t>(b) * L + i] != 0) {
          return Status::Error("corrupt blob: block " + Str(b) + " has nonzero code " +
                               Str(code[static_cast<size_t>(b) * L + i]) + " past the matrix edge");
        }
      }
    }
  }
  m.codes = std::move(code);
  *out = std::move(m);
  return Status::Ok();
}

}  // namespace internal

Status DecodeBlockSparse(const uint8_t* data, size_t size, BlockSparseMatrix* out) {
  if (out == nullptr) return Status::Error("null BlockSparseMatrix pointer");
  *out = BlockSparseMatrix();
  ParsedBlob blob;
  Status st = OpenBlob(data, size, &blob);
  if (!st.ok()) return st;
  return DecodeBlockSparse(blob, out);
}

Status DecodeBlockSparse(const ParsedBlob& blob, BlockSparseMatrix* out) {
  if (out == nullptr) return Status::Error("null BlockSparseMatrix pointer");
  *out = BlockSparseMatrix();
  if (!blob.valid()) return Status::Error("DecodeBlockSparse of a blob that was not opened");
  return internal::DecodeBlockLayout(blob.data(), blob.parsed(), out);
}

}  // namespace codec
}  // namespace dc
