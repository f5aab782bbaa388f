// Internals of the codec shared by its files (container.cc, raw.cc, huffman.cc, rans.cc, coders.cc,
// sparse_layout.cc): the byte readers, the parsed form of a blob, and the coder interface. Not part of the
// public API (dc_codec.h).
#ifndef DC_KERAS_OPS_CODEC_CODEC_INTERNAL_H_
#define DC_KERAS_OPS_CODEC_CODEC_INTERNAL_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dc_codec.h"

namespace dc {
namespace codec {
namespace internal {

constexpr uint64_t kMaxBodyLen = 1ull << 48;

inline std::string Str(uint64_t v) { return std::to_string(v); }

// True for +-0.0 only. Compares bits, not floats: under denormals-are-zero (set by TensorFlow on its
// threads) a float comparison would call a denormal zero, and decoding must not depend on the FPU mode.
inline bool IsZero(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return (bits & 0x7FFFFFFFu) == 0;
}

// The 2-D view of a tensor every in-memory form uses: rows = shape[0], cols = prod(shape[1:]); a scalar is
// 1x1, a vector of n elements n x 1. ReadShape bounds every dimension and their product by 2^32 - 1, but with
// shape[0] == 0 the product of the others is unbounded: cols then saturates at kMaxElements.
inline void MatrixDims(const BlobInfo& info, int64_t* rows, int64_t* cols) {
  *rows = info.shape.empty() ? 1 : info.shape[0];
  uint64_t product = 1;
  for (size_t i = 1; i < info.shape.size(); ++i) {
    const uint64_t dim = static_cast<uint64_t>(info.shape[i]);
    product = dim != 0 && product > kMaxElements / dim ? kMaxElements : product * dim;
  }
  *cols = static_cast<int64_t>(product);
}

// Block layout: the block grid's (rows, cols) in blocks. kCols: rows x ceil(cols / L); kRows:
// ceil(rows / L) x cols. Its size never exceeds the tensor's elements.
inline void BlockGrid(const BlobInfo& info, uint64_t* grid_rows, uint64_t* grid_cols) {
  int64_t rows, cols;
  MatrixDims(info, &rows, &cols);
  const uint64_t L = static_cast<uint64_t>(info.block_len);
  if (info.block_axis == BlockAxis::kCols) {
    *grid_rows = static_cast<uint64_t>(rows);
    *grid_cols = (static_cast<uint64_t>(cols) + L - 1) / L;
  } else {
    *grid_rows = (static_cast<uint64_t>(rows) + L - 1) / L;
    *grid_cols = static_cast<uint64_t>(cols);
  }
}

// Positions the delta stream walks: the tensor's elements, or the block grid's cells in block layout.
inline uint64_t WalkPositions(const BlobInfo& info) {
  if (!info.block_layout) return info.num_elements;
  uint64_t grid_rows, grid_cols;
  BlockGrid(info, &grid_rows, &grid_cols);
  return grid_rows * grid_cols;
}

// Symbols of the code stream: one per position (dense), per listed nonzero, or block_len per stored block.
inline uint64_t CodeCount(const BlobInfo& info) {
  if (info.dense_layout) return info.num_elements;
  return info.block_layout ? info.num_nonzeros * static_cast<uint64_t>(info.block_len) : info.num_nonzeros;
}

// Byte cursor over [pos, end) of a blob.
struct ByteReader {
  const uint8_t* data;
  size_t pos;
  size_t end;

  size_t Remaining() const { return end - pos; }

  Status U8(uint8_t* v, const char* what) {
    if (pos >= end) return Status::Error(std::string("truncated blob: missing ") + what + " at byte " + Str(pos));
    *v = data[pos++];
    return Status::Ok();
  }

  Status Skip(uint64_t n, const std::string& what) {
    if (n > Remaining()) {
      return Status::Error("truncated blob: " + what + " needs " + Str(n) + " bytes at byte " + Str(pos) +
                           ", only " + Str(Remaining()) + " left");
    }
    pos += static_cast<size_t>(n);
    return Status::Ok();
  }

  Status Varint(uint64_t* v, const std::string& what, uint64_t limit) {
    uint64_t value = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (pos >= end) return Status::Error("truncated blob: missing " + what + " at byte " + Str(pos));
      const uint8_t byte = data[pos++];
      if (shift == 63 && byte > 1) return Status::Error("header value too large: " + what + " overflows 64 bits");
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) {
        if (value > limit) {
          return Status::Error("header value too large: " + what + " = " + Str(value) + " exceeds " + Str(limit));
        }
        *v = value;
        return Status::Ok();
      }
    }
    return Status::Error("header value too large: " + what + " varint longer than 10 bytes");
  }
};

// MSB-first bit cursor for the small bit-packed tables.
struct TableBitReader {
  const uint8_t* data;
  uint64_t bitpos, end_bit;
  bool overrun = false;

  uint32_t Bit() {
    if (bitpos >= end_bit) {
      overrun = true;
      return 0;
    }
    const uint32_t b = (data[bitpos >> 3] >> (7 - (bitpos & 7))) & 1;
    ++bitpos;
    return b;
  }
  uint32_t Bits(int n) {
    uint32_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 1) | Bit();
    return v;
  }
  // Consumes zero padding to the byte boundary; false if a padding bit is set.
  bool Align() {
    while (bitpos & 7) {
      if (Bit()) return false;
    }
    return true;
  }
};

// One stream section of a blob as Parse found it: where it lies, and the coder's table.
struct Section {
  const char* name = "";
  Coder coder = Coder::kRaw;
  uint64_t count = 0;
  uint32_t alphabet = 0;
  int width = 0;
  size_t start = 0, end = 0, payload_start = 0;
  uint32_t lanes = 1;
  std::vector<uint64_t> lane_sizes;
  std::array<uint8_t, 256> lengths{};
  std::array<uint32_t, 256> freqs{};
  int scale = 0;
};

// A blob after Parse: header, codebook, and both stream sections located and their tables checked.
struct Parsed {
  BlobInfo info;
  std::array<float, 256> codebook{};
  bool has_delta = false, has_code = false;
  Section delta, code;
};

// A coder of the format: how to read its section (table, lane layout, payload bounds) and how to decode the
// section's symbols. One entry per coder id of the flags byte (FORMAT.md); a new coder is one file defining
// its CoderOps plus one line in coders.cc.
struct CoderOps {
  Coder id;
  const char* name;
  // Reads the section at r->pos into s (s->name, coder, count, alphabet, width are set), leaving r->pos after
  // it. Everything decode_section later relies on is checked here.
  Status (*parse_section)(ByteReader* r, Section* s);
  // Decodes s.count symbols into out, each < s.alphabet; data is the whole blob.
  Status (*decode_section)(const uint8_t* data, const Section& s, uint8_t* out);
};

extern const CoderOps kRawCoder;
extern const CoderOps kHuffmanCoder;
extern const CoderOps kRansCoder;

// The coder with flags id `id`, or null for an id the format does not define.
const CoderOps* FindCoder(uint8_t id);

// Reads the lane count and payload length that Huffman and rANS sections share, checking the lane count
// against max_lanes and the section's symbol count.
Status ReadLaneHeader(ByteReader* r, const Section& s, uint32_t max_lanes, uint64_t* lanes, uint64_t* payload_len);

// Validates the whole container (magic, version, lengths, CRC, header, codebook, section tables).
Status Parse(const uint8_t* data, size_t size, Parsed* p);

// Decodes section s into out[0, s.count), or into a vector of that size.
Status DecodeSectionInto(const uint8_t* data, const Section& s, uint8_t* out);
Status DecodeSection(const uint8_t* data, const Section& s, std::vector<uint8_t>* out);
// Decodes both symbol streams of a parsed blob into vectors.
Status DecodeParsedStreams(const uint8_t* data, const Parsed& p, std::vector<uint8_t>* delta,
                           std::vector<uint8_t>* code);

// Walks a sparse or block layout's delta stream over WalkPositions(info) cells, calling emit(position, n) for
// the n-th listed cell (n from 0); checks every position, the header's count and the no-trailing-filler rule.
template <typename Emit>
Status WalkDeltas(const BlobInfo& info, const std::vector<uint8_t>& delta, Emit emit) {
  // Locals, not info's fields: info is reached through a reference and the compiler cannot tell that emit's
  // stores leave it unchanged, so it would reload each bound once per nonzero (13% more instructions in
  // DecodeDense).
  const uint64_t positions = WalkPositions(info);
  const uint64_t listed = info.num_nonzeros;
  const uint64_t step = (1u << info.index_bits) - 1;
  const char* what = info.block_layout ? "block" : "nonzero";
  uint64_t pos = 0;  // cursor + 1, so the initial -1 needs no signed arithmetic
  uint64_t n = 0;
  for (const uint8_t d : delta) {
    if (d == 0) {
      pos += step;
      continue;
    }
    pos += d;
    if (pos > positions) {
      return Status::Error(std::string("corrupt blob: ") + what + " position " + Str(pos - 1) + " outside " +
                           (info.block_layout ? "the block grid of " + Str(positions) + " blocks"
                                              : "the tensor of " + Str(positions) + " elements"));
    }
    if (n >= listed) {
      return Status::Error(std::string("corrupt blob: delta stream lists more ") + what + "s than the header's " +
                           Str(listed));
    }
    emit(pos - 1, n);
    ++n;
  }
  if (n != info.num_nonzeros) {
    return Status::Error("corrupt blob: delta stream lists " + Str(n) + " " + what + "s, header says " +
                         Str(info.num_nonzeros));
  }
  if (!delta.empty() && delta.back() == 0) return Status::Error("corrupt blob: delta stream ends with a filler");
  return Status::Ok();
}

// Decodes a parsed block-layout blob into its block form (block_layout.cc), checking that every code past
// the matrix edge is 0.
Status DecodeBlockLayout(const uint8_t* data, const Parsed& p, BlockSparseMatrix* out);

// Calls fn(row, col, code) for every weight of m's stored blocks that lies inside the matrix, in C order of
// (row, col). m must be what DecodeBlockLayout built.
template <typename Fn>
void ForEachBlockWeight(const BlockSparseMatrix& m, Fn fn) {
  const int64_t L = m.block_len;
  if (m.axis == BlockAxis::kCols) {
    for (int64_t r = 0; r < m.rows; ++r) {
      for (uint32_t b = m.group_ptr[r]; b < m.group_ptr[r + 1]; ++b) {
        const int64_t start = m.block_start[b];
        const int64_t n = std::min<int64_t>(L, m.cols - start);
        for (int64_t i = 0; i < n; ++i) fn(r, start + i, m.codes[b * L + i]);
      }
    }
    return;
  }
  for (int64_t band = 0; band < m.NumGroups(); ++band) {
    const int64_t height = std::min<int64_t>(L, m.rows - band * L);
    for (int64_t i = 0; i < height; ++i) {
      for (uint32_t b = m.group_ptr[band]; b < m.group_ptr[band + 1]; ++b) {
        fn(band * L + i, static_cast<int64_t>(m.block_start[b]), m.codes[b * L + i]);
      }
    }
  }
}

}  // namespace internal
}  // namespace codec
}  // namespace dc

#endif  // DC_KERAS_OPS_CODEC_CODEC_INTERNAL_H_
