// The forms DcFullyConnected computes on (chunked, pairs, the delta/code walk): building them from a
// validated SparseMatrix, and FullyConnectedWeights' choice between them. The loops are in
// fully_connected_math.cc.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "kernels/fully_connected.h"

namespace dc::kernels {
namespace {

using codec::SparseMatrix;

int BitWidth(uint64_t v) {
  int bits = 0;
  for (; v != 0; v >>= 1) ++bits;
  return bits;
}

// True when `slots` chunk entries (nonzeros plus padding) stay within kMaxChunkPadding of `nonzeros`.
bool ChunkPaddingPays(uint64_t slots, uint64_t nonzeros) {
  return nonzeros > 0 && static_cast<double>(slots) <= kMaxChunkPadding * static_cast<double>(nonzeros);
}

// count[k] = row r's entries with codebook index k (count has one slot per centroid).
void CountCodes(const SparseMatrix& w, int64_t r, std::vector<uint32_t>* count) {
  std::fill(count->begin(), count->end(), 0u);
  w.ForEachEntry(r, [&](int64_t, uint8_t code) { ++(*count)[code]; });
}

// Entries of one centroid's group once padded to whole chunks.
uint32_t PaddedToChunks(uint32_t entries) { return (entries + kChunkSize - 1) / kChunkSize * kChunkSize; }

// Entries the chunked form of `w` would hold, padding included: one counting pass, so that Init can decide
// without building (and then dropping) the whole form for layers that take pairs.
uint64_t ChunkedSlots(const SparseMatrix& w) {
  std::vector<uint32_t> count(w.codebook.size());
  uint64_t slots = 0;
  for (int64_t r = 0; r < w.rows; ++r) {
    CountCodes(w, r, &count);
    for (uint32_t n : count) slots += PaddedToChunks(n);
  }
  return slots;
}

}  // namespace

size_t ChunkedMatrix::ResidentBytes() const {
  return row_ptr.capacity() * sizeof(uint32_t) + col.capacity() * sizeof(uint16_t) + code.capacity() +
         codebook.capacity() * sizeof(float);
}

bool ChunkedMatrix::Pays() const { return ChunkPaddingPays(col.size(), nonzeros); }

Status BuildChunkedMatrix(const SparseMatrix& w, ChunkedMatrix* out) {
  if (w.cols <= 0 || w.cols >= 0xFFFF)
    return Status::Error("sparse weights have " + std::to_string(w.cols) + " columns; the chunked form needs < 65535");
  const size_t ncodes = w.codebook.size();
  ChunkedMatrix m;
  m.rows = w.rows;
  m.cols = w.cols;
  m.codebook = w.codebook;
  m.row_ptr.reserve(static_cast<size_t>(w.rows) + 1);
  m.row_ptr.push_back(0);
  const size_t approx_chunks = w.delta.size() / kChunkSize + static_cast<size_t>(w.rows) * ncodes / 2;
  m.col.reserve(approx_chunks * kChunkSize);
  m.code.reserve(approx_chunks);
  std::vector<uint32_t> count(ncodes), fill(ncodes);
  std::vector<uint16_t> grouped;
  for (int64_t r = 0; r < w.rows; ++r) {
    CountCodes(w, r, &count);
    uint32_t total = 0;
    for (size_t k = 0; k < ncodes; ++k) {
      m.nonzeros += count[k];
      fill[k] = total;
      total += PaddedToChunks(count[k]);
    }
    grouped.assign(total, static_cast<uint16_t>(w.cols));  // padding reads the zero slot
    w.ForEachEntry(r, [&](int64_t col, uint8_t code) { grouped[fill[code]++] = static_cast<uint16_t>(col); });
    m.col.insert(m.col.end(), grouped.begin(), grouped.end());
    for (size_t k = 0; k < ncodes; ++k)
      m.code.insert(m.code.end(), PaddedToChunks(count[k]) / kChunkSize, static_cast<uint8_t>(k));
    if (m.code.size() > UINT32_MAX) return Status::Error("sparse weights are too large for the chunked form");
    m.row_ptr.push_back(static_cast<uint32_t>(m.code.size()));
  }
  m.col.shrink_to_fit();
  m.code.shrink_to_fit();
  *out = std::move(m);
  return Status();
}

size_t PairMatrix::ResidentBytes() const {
  return row_ptr.capacity() * sizeof(uint32_t) + pair.capacity() * sizeof(uint32_t) +
         pair_weights.capacity() * sizeof(float);
}

bool PairFormFits(const SparseMatrix& w) {
  const size_t k = w.codebook.size();
  if (k == 0 || k > kMaxPairCodebook || w.cols <= 0) return false;
  const int col_bits = BitWidth(static_cast<uint64_t>(w.cols));  // indices 0..cols, cols being the zero slot
  const int code_bits = std::max(1, BitWidth(k - 1));
  return 2 * col_bits + 2 * code_bits <= 32;
}

Status BuildPairMatrix(const SparseMatrix& w, PairMatrix* out) {
  if (!PairFormFits(w))
    return Status::Error("sparse weights with " + std::to_string(w.cols) + " columns and " +
                         std::to_string(w.codebook.size()) + " centroids do not fit 32-bit pair words");
  PairMatrix m;
  m.rows = w.rows;
  m.cols = w.cols;
  m.col_bits = BitWidth(static_cast<uint64_t>(w.cols));
  m.code_bits = std::max(1, BitWidth(w.codebook.size() - 1));
  const size_t codes = size_t{1} << m.code_bits;
  m.pair_weights.assign(2 * codes * codes, 0.f);
  for (size_t a = 0; a < w.codebook.size(); ++a)
    for (size_t b = 0; b < w.codebook.size(); ++b) {
      m.pair_weights[2 * (a * codes + b)] = w.codebook[a];
      m.pair_weights[2 * (a * codes + b) + 1] = w.codebook[b];
    }
  m.row_ptr.reserve(static_cast<size_t>(w.rows) + 1);
  m.row_ptr.push_back(0);
  m.pair.reserve(w.delta.size() / 2 + static_cast<size_t>(w.rows));
  auto word = [&](uint32_t col_a, uint32_t code_a, uint32_t col_b, uint32_t code_b) {
    return (code_a << m.code_bits | code_b) | col_a << m.col_a_shift() | col_b << m.col_b_shift();
  };
  for (int64_t r = 0; r < w.rows; ++r) {
    bool half = false;  // an entry waits for its partner
    uint32_t col_a = 0, code_a = 0;
    w.ForEachEntry(r, [&](int64_t col, uint8_t code) {
      ++m.nonzeros;
      if (!half) {
        col_a = static_cast<uint32_t>(col);
        code_a = code;
      } else {
        m.pair.push_back(word(col_a, code_a, static_cast<uint32_t>(col), code));
      }
      half = !half;
    });
    // The partner of an odd row's last entry reads the zero slot; it reuses that entry's centroid so that a
    // non-finite centroid the row does not use cannot leak in as 0 * inf.
    if (half) m.pair.push_back(word(col_a, code_a, static_cast<uint32_t>(w.cols), code_a));
    if (m.pair.size() > UINT32_MAX) return Status::Error("sparse weights are too large for the pair form");
    m.row_ptr.push_back(static_cast<uint32_t>(m.pair.size()));
  }
  m.pair.shrink_to_fit();
  *out = std::move(m);
  return Status();
}

Status FullyConnectedWeights::Init(codec::SparseMatrix w) {
  Status valid = ValidateSparseMatrix(w);
  if (!valid.ok()) return valid;
  *this = FullyConnectedWeights();
  rows_ = w.rows;
  cols_ = w.cols;
  for (uint8_t d : w.delta) nonzeros_ += d != 0;
  // The chunked form stores uint16 columns plus a zero slot.
  if (w.cols < 0xFFFF && ChunkPaddingPays(ChunkedSlots(w), nonzeros_)) {
    Status built = BuildChunkedMatrix(w, &chunked_);
    if (!built.ok()) return built;
    form_ = Form::kChunked;
    return Status();
  }
  if (PairFormFits(w)) {
    Status built = BuildPairMatrix(w, &pairs_);
    if (!built.ok()) return built;
    form_ = Form::kPair;
    return Status();
  }
  walk_ = std::move(w);
  form_ = Form::kWalk;
  return Status();
}

Status FullyConnectedWeights::Init(codec::BlockSparseMatrix w) {
  *this = FullyConnectedWeights();
  rows_ = w.rows;
  cols_ = w.cols;
  Status built = block_.Init(std::move(w));
  if (!built.ok()) return built;
  nonzeros_ = block_.stored_weights();
  form_ = Form::kBlock;
  return Status();
}

const char* FullyConnectedWeights::form_name() const {
  switch (form_) {
    case Form::kBlock: return "block";
    case Form::kChunked: return "chunked";
    case Form::kPair: return "pair";
    case Form::kWalk: break;
  }
  return "walk";
}

size_t FullyConnectedWeights::ResidentBytes() const {
  switch (form_) {
    case Form::kBlock: return block_.ResidentBytes();
    case Form::kChunked: return chunked_.ResidentBytes();
    case Form::kPair: return pairs_.ResidentBytes();
    case Form::kWalk: break;
  }
  return walk_.ResidentBytes();
}

}  // namespace dc::kernels
