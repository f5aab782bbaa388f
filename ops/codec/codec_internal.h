// Internals of the codec shared by its files (container.cc, raw.cc, huffman.cc, rans.cc, coders.cc,
// sparse_layout.cc): the byte readers, the parsed form of a blob, and the coder interface. Not part of the
// public API (dc_codec.h).
#ifndef DC_KERAS_OPS_CODEC_CODEC_INTERNAL_H_
#define DC_KERAS_OPS_CODEC_CODEC_INTERNAL_H_

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

}  // namespace internal
}  // namespace codec
}  // namespace dc

#endif  // DC_KERAS_OPS_CODEC_CODEC_INTERNAL_H_
