// The sparse layout of the format (relative indices with fillers, FORMAT.md) walked into dense floats or
// into the kernels' SparseMatrix, plus the SparseMatrix helpers.
#include <algorithm>
#include <new>

#include "codec_internal.h"

namespace dc {
namespace codec {

using internal::IsZero;
using internal::Parsed;
using internal::Str;

namespace {

// Walks the sparse-layout delta stream, calling emit(position, code) per nonzero.
template <typename Emit>
Status WalkSparse(const Parsed& p, const std::vector<uint8_t>& delta, const std::vector<uint8_t>& code, Emit emit) {
  return internal::WalkDeltas(p.info, delta, [&](uint64_t pos, uint64_t n) { emit(pos, code[n]); });
}

}  // namespace

Status DecodeDense(const uint8_t* data, size_t size, float* out, size_t out_len) {
  ParsedBlob blob;
  Status st = OpenBlob(data, size, &blob);
  if (!st.ok()) return st;
  return DecodeDense(blob, out, out_len);
}

Status DecodeDense(const ParsedBlob& blob, float* out, size_t out_len) {
  if (!blob.valid()) return Status::Error("DecodeDense of a blob that was not opened");
  const Parsed& p = blob.parsed();
  const uint8_t* data = blob.data();
  Status st;
  const BlobInfo& info = p.info;
  if (out_len != info.num_elements) {
    return Status::Error("output has " + Str(out_len) + " elements, the blob's tensor has " + Str(info.num_elements));
  }
  if (out == nullptr && out_len) return Status::Error("null output pointer");
  if (info.block_layout) {
    BlockSparseMatrix m;
    if (!(st = internal::DecodeBlockLayout(data, p, &m)).ok()) return st;
    std::fill(out, out + out_len, 0.0f);
    internal::ForEachBlockWeight(m, [&](int64_t r, int64_t c, uint8_t code) {
      out[static_cast<size_t>(r * m.cols + c)] = m.codebook[code];
    });
    return Status::Ok();
  }
  std::vector<uint8_t> delta, code;
  if (!(st = DecodeParsedStreams(data, p, &delta, &code)).ok()) return st;
  if (info.dense_layout) {
    uint64_t nonzero = 0;
    for (size_t i = 0; i < out_len; ++i) {
      const float v = p.codebook[code[i]];
      out[i] = v;
      nonzero += !IsZero(v);
    }
    if (nonzero != info.num_nonzeros) {
      return Status::Error("corrupt blob: dense layout decodes " + Str(nonzero) + " nonzeros, header says " +
                           Str(info.num_nonzeros));
    }
    return Status::Ok();
  }
  std::fill(out, out + out_len, 0.0f);
  return WalkSparse(p, delta, code, [&](uint64_t pos, uint8_t c) { out[pos] = p.codebook[c]; });
}

Status DecodeSparse(const uint8_t* data, size_t size, SparseMatrix* out) {
  if (out == nullptr) return Status::Error("null SparseMatrix pointer");
  *out = SparseMatrix();
  ParsedBlob blob;
  Status st = OpenBlob(data, size, &blob);
  if (!st.ok()) return st;
  return DecodeSparse(blob, out);
}

namespace {

// Appends entries in position order to a SparseMatrix: closes finished rows, then re-encodes the in-row gap
// with 255-step fillers. Entry counts stay below 2^32 because fillers here are never more than the blob's
// own (whose total is checked < 2^32) or, in dense layout, than positions / 255.
class SparseBuilder {
 public:
  explicit SparseBuilder(SparseMatrix* m) : m_(*m) {}

  void Emit(uint64_t pos, uint8_t c) {
    while (pos >= row_start_ + static_cast<uint64_t>(m_.cols)) {
      m_.row_ptr[++row_] = static_cast<uint32_t>(m_.delta.size());
      row_start_ += static_cast<uint64_t>(m_.cols);
      last_col_ = -1;
    }
    int64_t gap = static_cast<int64_t>(pos - row_start_) - last_col_;
    while (gap > kSparseFillerStep) {
      m_.delta.push_back(0);
      m_.code.push_back(0);
      gap -= kSparseFillerStep;
    }
    m_.delta.push_back(static_cast<uint8_t>(gap));
    m_.code.push_back(c);
    last_col_ = static_cast<int64_t>(pos - row_start_);
    overflow_ |= m_.delta.size() > 0xFFFFFFFFull;
  }

  bool overflow() const { return overflow_; }

  // Closes the remaining rows.
  void Finish() {
    while (row_ < m_.rows) m_.row_ptr[++row_] = static_cast<uint32_t>(m_.delta.size());
  }

 private:
  SparseMatrix& m_;
  int64_t row_ = 0, last_col_ = -1;
  uint64_t row_start_ = 0;
  bool overflow_ = false;
};

// Emits every nonzero weight of a block-layout blob, in position order.
Status EmitBlockLayout(const uint8_t* data, const Parsed& p, SparseBuilder* builder) {
  BlockSparseMatrix m;
  Status st = internal::DecodeBlockLayout(data, p, &m);
  if (!st.ok()) return st;
  internal::ForEachBlockWeight(m, [&](int64_t r, int64_t c, uint8_t code) {
    if (!IsZero(m.codebook[code]) && !builder->overflow()) builder->Emit(static_cast<uint64_t>(r * m.cols + c), code);
  });
  return Status::Ok();
}

// Emits every nonzero of a dense-layout blob's code stream, checking the header's nonzero count.
Status EmitDenseLayout(const Parsed& p, const std::vector<uint8_t>& code, SparseBuilder* builder) {
  uint64_t nonzero = 0;
  const uint64_t num_elements = p.info.num_elements;  // not reloaded after each of the builder's stores
  for (uint64_t i = 0; i < num_elements && !builder->overflow(); ++i) {
    if (!IsZero(p.codebook[code[i]])) {
      builder->Emit(i, code[i]);
      ++nonzero;
    }
  }
  if (!builder->overflow() && nonzero != p.info.num_nonzeros) {
    return Status::Error("corrupt blob: dense layout decodes " + Str(nonzero) + " nonzeros, header says " +
                         Str(p.info.num_nonzeros));
  }
  return Status::Ok();
}

}  // namespace

Status DecodeSparse(const ParsedBlob& blob, SparseMatrix* out) {
  if (out == nullptr) return Status::Error("null SparseMatrix pointer");
  *out = SparseMatrix();
  if (!blob.valid()) return Status::Error("DecodeSparse of a blob that was not opened");
  const Parsed& p = blob.parsed();
  const BlobInfo& info = p.info;
  std::vector<uint8_t> delta, code;
  Status st;
  // A block layout's streams are decoded by EmitBlockLayout into its block form.
  if (!info.block_layout && !(st = DecodeParsedStreams(blob.data(), p, &delta, &code)).ok()) return st;

  SparseMatrix m;
  internal::MatrixDims(info, &m.rows, &m.cols);
  try {
    m.row_ptr.assign(static_cast<size_t>(m.rows) + 1, 0);
    m.codebook.assign(p.codebook.begin(), p.codebook.begin() + info.num_centroids);
    const uint64_t listed = info.block_layout ? std::min(internal::CodeCount(info), info.num_elements)
                                              : info.num_nonzeros;
    m.delta.reserve(static_cast<size_t>(listed));
    m.code.reserve(static_cast<size_t>(listed));
    SparseBuilder builder(&m);
    if (info.block_layout) {
      st = EmitBlockLayout(blob.data(), p, &builder);
    } else if (info.dense_layout) {
      st = EmitDenseLayout(p, code, &builder);
    } else {
      st = WalkSparse(p, delta, code, [&](uint64_t pos, uint8_t c) { builder.Emit(pos, c); });
    }
    if (!st.ok()) return st;
    if (builder.overflow()) return Status::Error("tensor needs more than 2^32 - 1 sparse entries");
    builder.Finish();
  } catch (const std::bad_alloc&) {
    return Status::Error("out of memory building the sparse matrix");
  }
  m.delta.shrink_to_fit();
  m.code.shrink_to_fit();
  *out = std::move(m);
  return Status::Ok();
}

uint64_t SparseMatrix::NumNonzeros() const {
  uint64_t n = 0;
  for (const uint8_t d : delta) n += d != 0;
  return n;
}

void SparseMatrix::MatVec(const float* x, float* y) const {
  for (int64_t r = 0; r < rows; ++r) {
    float acc = 0.0f;
    ForEachEntry(r, [&](int64_t col, uint8_t c) { acc += codebook[c] * x[col]; });
    y[r] = acc;
  }
}

void SparseMatrix::ExpandRow(int64_t r, float* out) const {
  std::fill(out, out + cols, 0.0f);
  ForEachEntry(r, [&](int64_t col, uint8_t c) { out[col] = codebook[c]; });
}

}  // namespace codec
}  // namespace dc
