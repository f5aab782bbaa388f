// Decoder core of dc_keras's compressed weight format; the byte layout is specified in FORMAT.md.
//
// Structure: Parse() validates the container and every table and records where each stream section
// lies; the stream decoders (raw, Huffman, rANS) turn a section into uint8 symbols; DecodeDense /
// DecodeSparse walk those symbols. Every read is checked against the section it belongs to, and every
// write against the output's length, so malformed input ends in a Status, never in UB.
#include "dc_codec.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <new>

namespace dc {
namespace codec {
namespace {

constexpr uint8_t kMagic0 = 'D', kMagic1 = 'C';
constexpr uint8_t kFlagDense = 0x01, kFlagFp16 = 0x02, kFlagReserved = 0xC0;
constexpr uint32_t kMaxHuffmanLanes = 16;
constexpr uint32_t kMaxRansLanes = 1024;
constexpr int kRansMaxScale = 15;
constexpr uint32_t kRansL = 1u << 16;
constexpr uint64_t kMaxBodyLen = 1ull << 48;

std::string Str(uint64_t v) { return std::to_string(v); }

// ------------------------------------------------------------------------------------------- CRC32

struct CrcTables {
  uint32_t t[8][256];
  CrcTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
  }
};

const CrcTables& Tables() {
  static const CrcTables tables;
  return tables;
}

// ------------------------------------------------------------------------------------------- readers

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
  float value;
  if (exponent == 0) {
    value = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    value = mantissa ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    value = std::ldexp(static_cast<float>(mantissa | 0x400), static_cast<int>(exponent) - 25);
  }
  return sign ? -value : value;
}

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

// ------------------------------------------------------------------------------------------- model

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

struct Parsed {
  BlobInfo info;
  std::array<float, 256> codebook{};
  bool has_delta = false, has_code = false;
  Section delta, code;
};

Status ParseHuffmanTable(ByteReader* r, Section* s) {
  TableBitReader bits{r->data, static_cast<uint64_t>(r->pos) * 8, static_cast<uint64_t>(r->end) * 8};
  int prev = 0;
  uint32_t kraft = 0, used = 0;
  for (uint32_t sym = 0; sym < s->alphabet; ++sym) {
    int length;
    if (bits.Bit() == 0) {
      length = prev;
    } else if (bits.Bit() == 0) {
      length = prev + 1;
    } else if (bits.Bit() == 0) {
      length = prev - 1;
    } else {
      length = static_cast<int>(bits.Bits(4));
    }
    if (bits.overrun) return Status::Error(std::string("truncated blob: Huffman code lengths of the ") + s->name + " stream");
    if (length < 0 || length > kMaxHuffmanBits) {
      return Status::Error(std::string("corrupt blob: Huffman code length ") + std::to_string(length) + " of " +
                           s->name + " stream symbol " + Str(sym) + " outside 0..12");
    }
    s->lengths[sym] = static_cast<uint8_t>(length);
    prev = length;
    if (length) {
      ++used;
      kraft += 1u << (kMaxHuffmanBits - length);
    }
  }
  if (!bits.Align()) return Status::Error("corrupt blob: nonzero padding bits after Huffman code lengths");
  if (bits.overrun) return Status::Error(std::string("truncated blob: Huffman code lengths of the ") + s->name + " stream");
  r->pos = static_cast<size_t>(bits.bitpos >> 3);
  if (!used) return Status::Error(std::string("corrupt blob: Huffman table of the ") + s->name + " stream has no symbols");
  if (kraft > (1u << kMaxHuffmanBits)) {
    return Status::Error(std::string("corrupt blob: Huffman code lengths of the ") + s->name +
                         " stream violate Kraft's inequality");
  }
  return Status::Ok();
}

Status ParseRansTable(ByteReader* r, Section* s) {
  uint8_t scale;
  Status st = r->U8(&scale, "rANS scale");
  if (!st.ok()) return st;
  if (scale < 1 || scale > kRansMaxScale) {
    return Status::Error("corrupt blob: rANS scale " + Str(scale) + " of the " + s->name + " stream outside 1..15");
  }
  TableBitReader bits{r->data, static_cast<uint64_t>(r->pos) * 8, static_cast<uint64_t>(r->end) * 8};
  uint64_t total = 0;
  for (uint32_t sym = 0; sym < s->alphabet; ++sym) {
    int zeros = 0;
    while (bits.Bit() == 0) {
      if (bits.overrun) return Status::Error(std::string("truncated blob: rANS frequencies of the ") + s->name + " stream");
      if (++zeros > kRansMaxScale + 1) {
        return Status::Error(std::string("corrupt blob: rANS frequency of ") + s->name + " stream symbol " + Str(sym) +
                             " too large");
      }
    }
    const uint32_t value = (1u << zeros) | bits.Bits(zeros);
    if (bits.overrun) return Status::Error(std::string("truncated blob: rANS frequencies of the ") + s->name + " stream");
    s->freqs[sym] = value - 1;
    total += value - 1;
    if (total > (1u << scale)) {
      return Status::Error(std::string("corrupt blob: rANS frequencies of the ") + s->name + " stream exceed 2^" +
                           Str(scale));
    }
  }
  if (!bits.Align()) return Status::Error("corrupt blob: nonzero padding bits after rANS frequencies");
  if (bits.overrun) return Status::Error(std::string("truncated blob: rANS frequencies of the ") + s->name + " stream");
  if (total != (1u << scale)) {
    return Status::Error(std::string("corrupt blob: rANS frequencies of the ") + s->name + " stream sum to " +
                         Str(total) + ", expected 2^" + Str(scale));
  }
  r->pos = static_cast<size_t>(bits.bitpos >> 3);
  s->scale = scale;
  return Status::Ok();
}

Status ParseSection(ByteReader* r, Section* s) {
  s->start = r->pos;
  Status st;
  if (s->coder == Coder::kRaw) {
    s->payload_start = r->pos;
    // count < 2^33 and width <= 8, so the product cannot overflow.
    st = r->Skip((s->count * static_cast<uint64_t>(s->width) + 7) / 8, std::string("raw ") + s->name + " stream");
    s->end = r->pos;
    return st;
  }
  uint32_t max_lanes;
  if (s->coder == Coder::kHuffman) {
    st = ParseHuffmanTable(r, s);
    max_lanes = kMaxHuffmanLanes;
  } else {
    st = ParseRansTable(r, s);
    max_lanes = kMaxRansLanes;
  }
  if (!st.ok()) return st;
  uint64_t lanes, payload_len;
  st = r->Varint(&lanes, std::string("lane count of the ") + s->name + " stream", max_lanes);
  if (!st.ok()) return st;
  if (lanes < 1 || lanes > std::max<uint64_t>(1, s->count)) {
    return Status::Error(std::string("corrupt blob: ") + s->name + " stream has " + Str(lanes) + " lanes for " +
                         Str(s->count) + " symbols");
  }
  st = r->Varint(&payload_len, std::string("payload length of the ") + s->name + " stream", r->Remaining());
  if (!st.ok()) return st;
  s->lanes = static_cast<uint32_t>(lanes);
  s->lane_sizes.clear();
  if (s->coder == Coder::kHuffman) {
    uint64_t sum = 0;
    for (uint64_t lane = 0; lane + 1 < lanes; ++lane) {
      uint64_t size;
      st = r->Varint(&size, std::string("lane length of the ") + s->name + " stream", payload_len);
      if (!st.ok()) return st;
      sum += size;
      if (sum > payload_len) {
        return Status::Error(std::string("corrupt blob: lane lengths of the ") + s->name + " stream exceed its payload");
      }
      s->lane_sizes.push_back(size);
    }
    s->lane_sizes.push_back(payload_len - sum);
  } else if (payload_len < 4 * lanes || (payload_len - 4 * lanes) % 2) {
    return Status::Error(std::string("corrupt blob: rANS payload of the ") + s->name + " stream has " +
                         Str(payload_len) + " bytes, not 4*lanes plus whole 16-bit words");
  }
  s->payload_start = r->pos;
  st = r->Skip(payload_len, std::string(s->name) + " stream payload");
  s->end = r->pos;
  return st;
}

Status Parse(const uint8_t* data, size_t size, Parsed* p) {
  if (data == nullptr && size) return Status::Error("null blob pointer");
  if (size < 2 || data[0] != kMagic0 || data[1] != kMagic1) {
    return Status::Error("bad magic: expected \"DC\" (a dc_keras weight blob)");
  }
  ByteReader r{data, 2, size};
  uint8_t version;
  Status st = r.U8(&version, "format version");
  if (!st.ok()) return st;
  if (version != kFormatVersion) {
    return Status::Error("unsupported format version " + Str(version) + ": this reader understands version " +
                         Str(kFormatVersion));
  }
  uint64_t body_len;
  st = r.Varint(&body_len, "body length", kMaxBodyLen);
  if (!st.ok()) return st;
  if (r.Remaining() < 4) return Status::Error("truncated blob: missing CRC32");
  const uint32_t crc_stored = static_cast<uint32_t>(data[r.pos]) | static_cast<uint32_t>(data[r.pos + 1]) << 8 |
                              static_cast<uint32_t>(data[r.pos + 2]) << 16 | static_cast<uint32_t>(data[r.pos + 3]) << 24;
  r.pos += 4;
  if (r.Remaining() < body_len) {
    return Status::Error("truncated blob: header declares " + Str(body_len) + " body bytes, only " +
                         Str(r.Remaining()) + " present");
  }
  if (r.Remaining() > body_len) {
    return Status::Error("corrupt blob: " + Str(r.Remaining() - body_len) + " trailing bytes after the declared body");
  }
  const uint32_t crc = Crc32(data + r.pos, r.Remaining());
  if (crc != crc_stored) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "CRC32 mismatch: stored %08x, computed %08x (blob corrupted)", crc_stored, crc);
    return Status::Error(buf);
  }

  BlobInfo& info = p->info;
  info = BlobInfo();
  uint8_t flags, ndim, widths;
  if (!(st = r.U8(&flags, "flags")).ok()) return st;
  if (flags & kFlagReserved) {
    return Status::Error("unsupported feature flags (reserved bits set: written by a newer dc_keras?)");
  }
  info.dense_layout = flags & kFlagDense;
  info.codebook_fp16 = flags & kFlagFp16;
  const uint8_t code_coder = (flags >> 2) & 3, delta_coder = (flags >> 4) & 3;
  if (code_coder == 3 || delta_coder == 3) return Status::Error("unsupported coder id 3 in flags");
  if (info.dense_layout && delta_coder) return Status::Error("corrupt blob: dense layout with a delta-stream coder");
  info.code_coder = static_cast<Coder>(code_coder);
  info.delta_coder = static_cast<Coder>(delta_coder);
  if (!(st = r.U8(&ndim, "rank")).ok()) return st;
  if (ndim > kMaxRank) return Status::Error("header value too large: rank " + Str(ndim) + " exceeds 8");
  uint64_t elements = 1;
  for (int axis = 0; axis < ndim; ++axis) {
    uint64_t dim;
    st = r.Varint(&dim, "dimension " + Str(axis), kMaxElements);
    if (!st.ok()) return st;
    info.shape.push_back(static_cast<int64_t>(dim));
    // Both factors are <= 2^32 - 1 here, so the product fits in 64 bits before the check.
    elements *= dim;
    if (elements > kMaxElements) {
      return Status::Error("header value too large: tensor exceeds " + Str(kMaxElements) + " elements");
    }
  }
  info.num_elements = elements;
  if (!(st = r.U8(&widths, "widths")).ok()) return st;
  info.bits = widths & 15;
  info.index_bits = widths >> 4;
  if (info.bits < 1 || info.bits > 8) return Status::Error("corrupt blob: bits " + Str(info.bits) + " outside 1..8");
  if (info.dense_layout && info.index_bits) {
    return Status::Error("corrupt blob: index_bits " + Str(info.index_bits) + " in dense layout (must be 0)");
  }
  if (!info.dense_layout && (info.index_bits < 2 || info.index_bits > 8)) {
    return Status::Error("corrupt blob: index_bits " + Str(info.index_bits) + " outside 2..8");
  }
  uint64_t k, nnz, entries;
  if (!(st = r.Varint(&k, "number of centroids", 1u << info.bits)).ok()) return st;
  if (!(st = r.Varint(&nnz, "number of nonzeros", elements)).ok()) return st;
  if (info.dense_layout) {
    entries = elements;
    if (elements && !k) return Status::Error("corrupt blob: dense layout without a codebook");
  } else {
    if (!(st = r.Varint(&entries, "number of entries", kMaxElements)).ok()) return st;
    if (entries < nnz) return Status::Error("corrupt blob: " + Str(entries) + " entries cannot hold " + Str(nnz) + " nonzeros");
    if (nnz && !k) return Status::Error("corrupt blob: nonzeros without a codebook");
    // Every filler advances the cursor by M and every real entry by at least 1, within the tensor.
    const uint64_t step = (1u << info.index_bits) - 1;
    if ((entries - nnz) * step + nnz > elements) {
      return Status::Error("corrupt blob: " + Str(nnz) + " nonzeros and " + Str(entries - nnz) +
                           " fillers overrun a tensor of " + Str(elements) + " elements");
    }
  }
  info.num_centroids = static_cast<uint32_t>(k);
  info.num_nonzeros = nnz;
  info.num_entries = entries;
  info.header_bytes = r.pos;
  const size_t cb_start = r.pos;
  const uint64_t cb_bytes = k * (info.codebook_fp16 ? 2 : 4);
  if (!(st = r.Skip(cb_bytes, "codebook")).ok()) return st;
  for (uint64_t i = 0; i < k; ++i) {
    const uint8_t* b = data + cb_start + i * (info.codebook_fp16 ? 2 : 4);
    float v;
    if (info.codebook_fp16) {
      v = HalfToFloat(static_cast<uint16_t>(b[0] | b[1] << 8));
    } else {
      const uint32_t u = static_cast<uint32_t>(b[0]) | static_cast<uint32_t>(b[1]) << 8 |
                         static_cast<uint32_t>(b[2]) << 16 | static_cast<uint32_t>(b[3]) << 24;
      std::memcpy(&v, &u, 4);
    }
    if (!std::isfinite(v)) return Status::Error("corrupt blob: codebook holds a non-finite value");
    p->codebook[i] = IsZero(v) ? 0.0f : v;  // -0.0 reads as +0.0 so every decoder yields identical bytes
  }
  info.codebook_bytes = cb_bytes;

  p->has_delta = !info.dense_layout && entries > 0;
  if (p->has_delta) {
    Section& s = p->delta;
    s.name = "delta";
    s.coder = info.delta_coder;
    s.count = entries;
    s.alphabet = 1u << info.index_bits;
    s.width = info.index_bits;
    if (!(st = ParseSection(&r, &s)).ok()) return st;
    info.delta_stream_bytes = s.end - s.start;
  }
  const uint64_t code_count = info.dense_layout ? elements : nnz;
  p->has_code = code_count > 0;
  if (p->has_code) {
    Section& s = p->code;
    s.name = "code";
    s.coder = info.code_coder;
    s.count = code_count;
    s.alphabet = static_cast<uint32_t>(k);
    s.width = info.bits;
    if (!(st = ParseSection(&r, &s)).ok()) return st;
    info.code_stream_bytes = s.end - s.start;
  }
  if (r.pos != size) return Status::Error("corrupt blob: " + Str(size - r.pos) + " unused bytes after the streams");
  info.total_bytes = size;
  return Status::Ok();
}

// ------------------------------------------------------------------------------------------- raw

Status DecodeRaw(const uint8_t* data, const Section& s, uint8_t* out) {
  const uint8_t* p = data + s.payload_start;
  const size_t nbytes = s.end - s.payload_start;
  const uint32_t w = static_cast<uint32_t>(s.width);
  const uint32_t mask = (1u << w) - 1;
  uint64_t bitpos = 0;
  uint32_t bad = 0;
  for (uint64_t i = 0; i < s.count; ++i, bitpos += w) {
    // A symbol spans at most two bytes (w <= 8); the second exists unless the symbol ends in the first.
    const size_t byte = static_cast<size_t>(bitpos >> 3);
    const uint32_t lo = (byte + 1 < nbytes) ? p[byte + 1] : 0;
    const uint32_t two = (static_cast<uint32_t>(p[byte]) << 8) | lo;
    const uint32_t sym = (two >> (16 - w - (bitpos & 7))) & mask;
    bad |= sym >= s.alphabet;
    out[i] = static_cast<uint8_t>(sym);
  }
  if (bad) return Status::Error(std::string("corrupt blob: ") + s.name + " stream symbol outside its alphabet");
  if (bitpos & 7) {
    const uint32_t pad_mask = (1u << (8 - (bitpos & 7))) - 1;
    if (p[nbytes - 1] & pad_mask) {
      return Status::Error(std::string("corrupt blob: nonzero padding bits after the raw ") + s.name + " stream");
    }
  }
  return Status::Ok();
}

// ------------------------------------------------------------------------------------------- Huffman

// single[w]: symbol | length << 8 of the code that 12-bit window w starts with (length 0: invalid).
// multi[w]: up to three symbols that lie entirely inside w: bytes 0..2 symbols, bits 24..25 how many,
// bits 26..29 the bits they consume. Multi-symbol lookups are what lets Huffman outrun zstd.
struct HuffmanTables {
  std::array<uint16_t, 1u << kMaxHuffmanBits> single;
  std::array<uint32_t, 1u << kMaxHuffmanBits> multi;
};

void BuildHuffmanTables(const Section& s, HuffmanTables* t) {
  t->single.fill(0);
  uint32_t code = 0;
  int prev_len = 0;
  for (int len = 1; len <= kMaxHuffmanBits; ++len) {
    for (uint32_t sym = 0; sym < s.alphabet; ++sym) {
      if (s.lengths[sym] != len) continue;
      code <<= (len - prev_len);
      prev_len = len;
      const uint32_t first = code << (kMaxHuffmanBits - len);
      const uint32_t span = 1u << (kMaxHuffmanBits - len);
      for (uint32_t i = 0; i < span; ++i) t->single[first + i] = static_cast<uint16_t>(sym | (len << 8));
      ++code;
    }
  }
  constexpr uint32_t kWindowMask = (1u << kMaxHuffmanBits) - 1;
  for (uint32_t w = 0; w <= kWindowMask; ++w) {
    uint32_t entry = 0, consumed = 0, n = 0;
    while (n < 3) {
      const uint16_t e = t->single[(w << consumed) & kWindowMask];
      const uint32_t len = e >> 8;
      if (len == 0 || consumed + len > static_cast<uint32_t>(kMaxHuffmanBits)) break;
      entry |= static_cast<uint32_t>(e & 0xFF) << (8 * n);
      consumed += len;
      ++n;
    }
    t->multi[w] = entry | n << 24 | consumed << 26;
  }
}

inline uint64_t LoadBE64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];  // compilers turn this into a load + bswap
  return v;
}

// One lane's bit reader: `buf` holds `avail` valid bits left-aligned, `p` is the next unread byte.
struct LaneState {
  const uint8_t* begin;
  const uint8_t* p;
  const uint8_t* end;
  uint64_t buf = 0;
  uint32_t avail = 0;
  uint8_t* out;
  uint8_t* out_end;
};

// Decodes with multi-symbol lookups while at least 8 input bytes and 12 output slots remain. Forced
// inline and working on by-value state so that the lane variables live in registers: the uint8_t
// output stores may alias anything, which would otherwise force reloads after every store.
#if defined(__GNUC__)
#define DC_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define DC_ALWAYS_INLINE inline
#endif

DC_ALWAYS_INLINE void HuffmanFastSteps(LaneState& ls, const uint32_t* multi) {
  // Refill to >= 56 bits, branch-free (bits past `avail` are the correct upcoming bits, so OR-ing
  // them again is harmless).
  uint64_t buf = ls.buf | (LoadBE64(ls.p) >> ls.avail);
  ls.p += (63 - ls.avail) >> 3;
  uint32_t avail = ls.avail | 56;
  uint8_t* out = ls.out;
  for (int k = 0; k < 4; ++k) {  // 4 lookups consume at most 48 of the >= 56 bits
    const uint32_t e = multi[buf >> 52];
    // An invalid window (n = 0, 0 bits) makes no progress; the tail decoder then reports it.
    const uint32_t n = (e >> 24) & 3, used = e >> 26;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    std::memcpy(out, &e, 4);  // symbols in bytes 0..2; byte 3 is overwritten by later output
#else
    out[0] = static_cast<uint8_t>(e);
    out[1] = static_cast<uint8_t>(e >> 8);
    out[2] = static_cast<uint8_t>(e >> 16);
#endif
    out += n;
    buf <<= used;
    avail -= used;
  }
  ls.buf = buf;
  ls.avail = avail;
  ls.out = out;
}

// Safe number of HuffmanFastSteps for a lane: each consumes <= 7 input bytes and emits <= 12 symbols
// (writing up to 4 bytes at its last output position), so it needs 8 readable input bytes and 13
// writable output bytes before it starts.
inline uint64_t SafeFastSteps(const LaneState& ls) {
  const uint64_t in = static_cast<uint64_t>(ls.end - ls.p), room = static_cast<uint64_t>(ls.out_end - ls.out);
  if (in < 8 || room < 13) return 0;
  return std::min((in - 8) / 7 + 1, (room - 13) / 12 + 1);
}

// All lanes in lock step (so their independent dependency chains overlap in the CPU), with the
// bounds checks hoisted into a step budget; then each lane alone until its budget runs out.
DC_ALWAYS_INLINE void HuffmanLanesBody(LaneState* lanes, uint32_t num_lanes, const uint32_t* multi) {
  if (num_lanes == 4) {
    LaneState a = lanes[0], b = lanes[1], c = lanes[2], d = lanes[3];
    for (;;) {
      const uint64_t steps = std::min(std::min(SafeFastSteps(a), SafeFastSteps(b)),
                                      std::min(SafeFastSteps(c), SafeFastSteps(d)));
      if (steps == 0) break;
      const uint8_t* progress = a.p;
      for (uint64_t i = 0; i < steps; ++i) {
        HuffmanFastSteps(a, multi);
        HuffmanFastSteps(b, multi);
        HuffmanFastSteps(c, multi);
        HuffmanFastSteps(d, multi);
      }
      if (a.p == progress) break;  // lane a is stuck on an invalid code
    }
    lanes[0] = a, lanes[1] = b, lanes[2] = c, lanes[3] = d;
  }
  for (uint32_t j = 0; j < num_lanes; ++j) {
    LaneState ls = lanes[j];
    for (;;) {
      const uint64_t steps = SafeFastSteps(ls);
      if (steps == 0) break;
      const uint8_t* progress_out = ls.out;
      for (uint64_t i = 0; i < steps; ++i) HuffmanFastSteps(ls, multi);
      if (ls.out == progress_out) break;  // stuck on an invalid code
    }
    lanes[j] = ls;
  }
}

void HuffmanLanesGeneric(LaneState* lanes, uint32_t num_lanes, const uint32_t* multi) {
  HuffmanLanesBody(lanes, num_lanes, multi);
}

#if defined(__x86_64__) && defined(__GNUC__)
// BMI2's shlx/shrx make the variable shifts on the critical path single-cycle; chosen at run time so
// the library still runs on CPUs without BMI2.
__attribute__((target("bmi2"))) void HuffmanLanesBmi2(LaneState* lanes, uint32_t num_lanes, const uint32_t* multi) {
  HuffmanLanesBody(lanes, num_lanes, multi);
}
bool HasBmi2() {
  static const bool has = __builtin_cpu_supports("bmi2");
  return has;
}
#endif

// Finishes a lane one symbol at a time with explicit bounds, then checks its length and padding.
Status HuffmanTail(LaneState* ls, const HuffmanTables& t, const char* name) {
  const uint64_t lane_bits = static_cast<uint64_t>(ls->end - ls->begin) * 8;
  uint64_t pos = static_cast<uint64_t>(ls->p - ls->begin) * 8 - ls->avail;
  while (ls->out < ls->out_end) {
    // 12-bit window at pos from the 3 bytes that hold it, zeros past the end of the lane.
    uint32_t three = 0;
    for (uint64_t b = pos >> 3; b < (pos >> 3) + 3; ++b) three = (three << 8) | (b < (lane_bits >> 3) ? ls->begin[b] : 0u);
    const uint32_t window = (three >> (24 - kMaxHuffmanBits - (pos & 7))) & ((1u << kMaxHuffmanBits) - 1);
    const uint16_t e = t.single[window];
    const uint32_t len = e >> 8;
    if (len == 0) return Status::Error(std::string("corrupt blob: invalid Huffman code in the ") + name + " stream");
    if (pos + len > lane_bits) {
      return Status::Error(std::string("corrupt blob: a ") + name + " stream lane ends before its symbols");
    }
    *ls->out++ = static_cast<uint8_t>(e);
    pos += len;
  }
  if ((pos + 7) / 8 != lane_bits / 8) {
    return Status::Error(std::string("corrupt blob: a ") + name + " stream lane has trailing bytes");
  }
  if ((pos & 7) && (ls->begin[pos >> 3] & ((1u << (8 - (pos & 7))) - 1))) {
    return Status::Error(std::string("corrupt blob: a ") + name + " stream lane has nonzero padding bits");
  }
  return Status::Ok();
}

Status DecodeHuffman(const uint8_t* data, const Section& s, uint8_t* out) {
  std::unique_ptr<HuffmanTables> tables(new (std::nothrow) HuffmanTables);
  if (!tables) return Status::Error("out of memory");
  BuildHuffmanTables(s, tables.get());
  const uint64_t per_lane = (s.count + s.lanes - 1) / s.lanes;
  std::vector<LaneState> lanes(s.lanes);
  const uint8_t* in = data + s.payload_start;
  for (uint32_t j = 0; j < s.lanes; ++j) {
    LaneState& ls = lanes[j];
    ls.begin = ls.p = in;
    in += s.lane_sizes[j];
    ls.end = in;
    const uint64_t first = std::min<uint64_t>(s.count, j * per_lane);
    const uint64_t last = std::min<uint64_t>(s.count, (j + 1) * per_lane);
    ls.out = out + first;
    ls.out_end = out + last;
  }
  const uint32_t* multi = tables->multi.data();
#if defined(__x86_64__) && defined(__GNUC__)
  if (HasBmi2()) {
    HuffmanLanesBmi2(lanes.data(), s.lanes, multi);
  } else {
    HuffmanLanesGeneric(lanes.data(), s.lanes, multi);
  }
#else
  HuffmanLanesGeneric(lanes.data(), s.lanes, multi);
#endif
  for (LaneState& ls : lanes) {
    // Only whole symbols were emitted, so out-position and bit-position are in step.
    Status st = HuffmanTail(&ls, *tables, s.name);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

// ------------------------------------------------------------------------------------------- rANS

Status DecodeRans(const uint8_t* data, const Section& s, uint8_t* out) {
  const uint32_t lanes = s.lanes, scale = static_cast<uint32_t>(s.scale);
  const uint32_t mask = (1u << scale) - 1;
  std::vector<uint8_t> slot_symbol(size_t{1} << scale);
  std::array<uint32_t, 256> start{};
  uint32_t cum = 0;
  for (uint32_t sym = 0; sym < s.alphabet; ++sym) {
    start[sym] = cum;
    for (uint32_t i = 0; i < s.freqs[sym]; ++i) slot_symbol[cum + i] = static_cast<uint8_t>(sym);
    cum += s.freqs[sym];
  }
  const uint8_t* p = data + s.payload_start;
  const uint8_t* words = p + 4 * static_cast<size_t>(lanes);
  const size_t num_words = (s.end - s.payload_start - 4 * static_cast<size_t>(lanes)) / 2;
  std::vector<uint32_t> state(lanes);
  for (uint32_t j = 0; j < lanes; ++j) {
    state[j] = static_cast<uint32_t>(p[4 * j]) | static_cast<uint32_t>(p[4 * j + 1]) << 8 |
               static_cast<uint32_t>(p[4 * j + 2]) << 16 | static_cast<uint32_t>(p[4 * j + 3]) << 24;
    if (state[j] < kRansL) return Status::Error(std::string("corrupt blob: rANS state of the ") + s.name + " stream below 2^16");
  }
  size_t next = 0;
  uint64_t i = 0;
  while (i < s.count) {
    const uint32_t active = static_cast<uint32_t>(std::min<uint64_t>(lanes, s.count - i));
    for (uint32_t j = 0; j < active; ++j, ++i) {
      uint32_t x = state[j];
      const uint32_t slot = x & mask;
      const uint8_t sym = slot_symbol[slot];
      out[i] = sym;
      // x < 2^32 and f * (x >> scale) + slot - start < f * 2^(32-scale) <= 2^32: no overflow.
      x = s.freqs[sym] * (x >> scale) + slot - start[sym];
      if (x < kRansL) {
        if (next >= num_words) return Status::Error(std::string("corrupt blob: rANS ") + s.name + " stream runs out of words");
        x = (x << 16) | static_cast<uint32_t>(words[2 * next] | words[2 * next + 1] << 8);
        ++next;
      }
      state[j] = x;
    }
  }
  if (next != num_words) return Status::Error(std::string("corrupt blob: rANS ") + s.name + " stream has unused words");
  for (uint32_t j = 0; j < lanes; ++j) {
    if (state[j] != kRansL) {
      return Status::Error(std::string("corrupt blob: rANS ") + s.name + " stream does not end in its initial state");
    }
  }
  return Status::Ok();
}

// Decodes a section into out[0, s.count).
Status DecodeSectionInto(const uint8_t* data, const Section& s, uint8_t* out) {
  switch (s.coder) {
    case Coder::kRaw:
      return DecodeRaw(data, s, out);
    case Coder::kHuffman:
      return DecodeHuffman(data, s, out);
    case Coder::kRans:
      return DecodeRans(data, s, out);
  }
  return Status::Error("unsupported coder");
}

Status DecodeSection(const uint8_t* data, const Section& s, std::vector<uint8_t>* out) {
  try {
    out->assign(static_cast<size_t>(s.count), 0);
  } catch (const std::bad_alloc&) {
    return Status::Error("out of memory allocating " + Str(s.count) + " symbols");
  }
  return DecodeSectionInto(data, s, out->data());
}

Status DecodeParsedStreams(const uint8_t* data, const Parsed& p, std::vector<uint8_t>* delta,
                           std::vector<uint8_t>* code) {
  delta->clear();
  code->clear();
  if (p.has_delta) {
    Status st = DecodeSection(data, p.delta, delta);
    if (!st.ok()) return st;
  }
  if (p.has_code) {
    Status st = DecodeSection(data, p.code, code);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

// Walks the sparse-layout delta stream, calling emit(position, code) per nonzero; validates positions,
// counts and the no-trailing-filler rule.
template <typename Emit>
Status WalkSparse(const Parsed& p, const std::vector<uint8_t>& delta, const std::vector<uint8_t>& code, Emit emit) {
  const BlobInfo& info = p.info;
  const uint64_t step = (1u << info.index_bits) - 1;
  uint64_t pos = 0;  // cursor + 1, so the initial -1 needs no signed arithmetic
  uint64_t k = 0;
  for (const uint8_t d : delta) {
    if (d == 0) {
      pos += step;
      continue;
    }
    pos += d;
    if (pos > info.num_elements) {
      return Status::Error("corrupt blob: nonzero position " + Str(pos - 1) + " outside the tensor of " +
                           Str(info.num_elements) + " elements");
    }
    if (k >= code.size()) {
      return Status::Error("corrupt blob: delta stream lists more nonzeros than the header's " + Str(info.num_nonzeros));
    }
    emit(pos - 1, code[k]);
    ++k;
  }
  if (k != info.num_nonzeros) {
    return Status::Error("corrupt blob: delta stream lists " + Str(k) + " nonzeros, header says " + Str(info.num_nonzeros));
  }
  if (!delta.empty() && delta.back() == 0) return Status::Error("corrupt blob: delta stream ends with a filler");
  return Status::Ok();
}

}  // namespace

// ------------------------------------------------------------------------------------------- public

const char* CoderName(Coder coder) {
  switch (coder) {
    case Coder::kRaw:
      return "raw";
    case Coder::kHuffman:
      return "huffman";
    case Coder::kRans:
      return "rans";
  }
  return "unknown";
}

uint32_t Crc32(const uint8_t* data, size_t size, uint32_t crc) {
  const CrcTables& tb = Tables();
  crc = ~crc;
  while (size >= 8) {
    const uint32_t lo = crc ^ (static_cast<uint32_t>(data[0]) | static_cast<uint32_t>(data[1]) << 8 |
                               static_cast<uint32_t>(data[2]) << 16 | static_cast<uint32_t>(data[3]) << 24);
    crc = tb.t[7][lo & 0xFF] ^ tb.t[6][(lo >> 8) & 0xFF] ^ tb.t[5][(lo >> 16) & 0xFF] ^ tb.t[4][lo >> 24] ^
          tb.t[3][data[4]] ^ tb.t[2][data[5]] ^ tb.t[1][data[6]] ^ tb.t[0][data[7]];
    data += 8;
    size -= 8;
  }
  while (size--) crc = tb.t[0][(crc ^ *data++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

Status ParseInfo(const uint8_t* data, size_t size, BlobInfo* info) {
  if (info == nullptr) return Status::Error("null BlobInfo pointer");
  Parsed p;
  Status st = Parse(data, size, &p);
  if (st.ok()) *info = std::move(p.info);
  return st;
}

Status DecodeStreams(const uint8_t* data, size_t size, std::vector<uint8_t>* delta, std::vector<uint8_t>* code) {
  if (delta == nullptr || code == nullptr) return Status::Error("null output pointer");
  Parsed p;
  Status st = Parse(data, size, &p);
  if (!st.ok()) return st;
  return DecodeParsedStreams(data, p, delta, code);
}

Status DecodeStreamsInto(const uint8_t* data, size_t size, uint8_t* delta, size_t delta_len, uint8_t* code,
                         size_t code_len) {
  Parsed p;
  Status st = Parse(data, size, &p);
  if (!st.ok()) return st;
  const uint64_t want_delta = p.has_delta ? p.delta.count : 0, want_code = p.has_code ? p.code.count : 0;
  if (delta_len != want_delta || code_len != want_code) {
    return Status::Error("output has " + Str(delta_len) + " and " + Str(code_len) + " symbols, the blob has " +
                         Str(want_delta) + " and " + Str(want_code));
  }
  if ((want_delta && delta == nullptr) || (want_code && code == nullptr)) return Status::Error("null output pointer");
  if (p.has_delta && !(st = DecodeSectionInto(data, p.delta, delta)).ok()) return st;
  if (p.has_code && !(st = DecodeSectionInto(data, p.code, code)).ok()) return st;
  return Status::Ok();
}

namespace {

// Bytes of the two symbol-stream buffers DecodeParsedStreams fills (one byte per symbol).
uint64_t StreamBufferBytes(const BlobInfo& info) {
  const uint64_t delta = info.dense_layout ? 0 : info.num_entries;
  const uint64_t code = info.dense_layout ? info.num_elements : info.num_nonzeros;
  return delta + code;
}

}  // namespace

uint64_t DenseDecodeBytes(const BlobInfo& info) { return StreamBufferBytes(info) + info.num_elements * sizeof(float); }

uint64_t SparseDecodeBytes(const BlobInfo& info) {
  const uint64_t rows = info.shape.empty() ? 1 : static_cast<uint64_t>(info.shape[0]);
  // In-memory fillers never outnumber the blob's own (their step, 255, is the largest the format has, and a
  // gap restarted at a row's start is shorter than the blob's gap); a dense-layout blob has none, and gets
  // at most one per 255 positions.
  const uint64_t entries = info.dense_layout ? info.num_nonzeros + info.num_elements / kSparseFillerStep
                                             : info.num_entries;
  return StreamBufferBytes(info) + (rows + 1) * sizeof(uint32_t) + 2 * entries +
         uint64_t{info.num_centroids} * sizeof(float);
}

Status DecodeDense(const uint8_t* data, size_t size, float* out, size_t out_len) {
  Parsed p;
  Status st = Parse(data, size, &p);
  if (!st.ok()) return st;
  const BlobInfo& info = p.info;
  if (out_len != info.num_elements) {
    return Status::Error("output has " + Str(out_len) + " elements, the blob's tensor has " + Str(info.num_elements));
  }
  if (out == nullptr && out_len) return Status::Error("null output pointer");
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
  Parsed p;
  Status st = Parse(data, size, &p);
  if (!st.ok()) return st;
  const BlobInfo& info = p.info;
  const int64_t rows = info.shape.empty() ? 1 : info.shape[0];
  int64_t cols = 1;  // each dimension and the product are <= 2^32 - 1 unless a dimension is 0
  for (size_t i = 1; i < info.shape.size(); ++i) {
    cols *= info.shape[i];
    if (cols == 0) break;
  }
  std::vector<uint8_t> delta, code;
  if (!(st = DecodeParsedStreams(data, p, &delta, &code)).ok()) return st;

  SparseMatrix m;
  m.rows = rows;
  m.cols = cols;
  try {
    m.row_ptr.assign(static_cast<size_t>(rows) + 1, 0);
    m.codebook.assign(p.codebook.begin(), p.codebook.begin() + info.num_centroids);
    m.delta.reserve(static_cast<size_t>(info.num_nonzeros));
    m.code.reserve(static_cast<size_t>(info.num_nonzeros));
  } catch (const std::bad_alloc&) {
    return Status::Error("out of memory allocating the sparse matrix");
  }
  // Emits entries in position order: closes finished rows, then re-encodes the in-row gap with
  // 255-step fillers. Entry counts stay below 2^32 because fillers here are never more than the
  // blob's own (whose total is checked < 2^32) or, in dense layout, than positions / 255.
  int64_t row = 0, last_col = -1;
  uint64_t row_start = 0;
  bool overflow = false;
  auto emit = [&](uint64_t pos, uint8_t c) {
    while (pos >= row_start + static_cast<uint64_t>(m.cols)) {
      m.row_ptr[++row] = static_cast<uint32_t>(m.delta.size());
      row_start += static_cast<uint64_t>(m.cols);
      last_col = -1;
    }
    int64_t gap = static_cast<int64_t>(pos - row_start) - last_col;
    while (gap > kSparseFillerStep) {
      m.delta.push_back(0);
      m.code.push_back(0);
      gap -= kSparseFillerStep;
    }
    m.delta.push_back(static_cast<uint8_t>(gap));
    m.code.push_back(c);
    last_col = static_cast<int64_t>(pos - row_start);
    overflow |= m.delta.size() > 0xFFFFFFFFull;
  };
  try {
    if (info.dense_layout) {
      uint64_t nonzero = 0;
      for (uint64_t i = 0; i < info.num_elements && !overflow; ++i) {
        if (!IsZero(p.codebook[code[i]])) {
          emit(i, code[i]);
          ++nonzero;
        }
      }
      if (!overflow && nonzero != info.num_nonzeros) {
        return Status::Error("corrupt blob: dense layout decodes " + Str(nonzero) + " nonzeros, header says " +
                             Str(info.num_nonzeros));
      }
    } else {
      st = WalkSparse(p, delta, code, emit);
      if (!st.ok()) return st;
    }
  } catch (const std::bad_alloc&) {
    return Status::Error("out of memory building the sparse matrix");
  }
  if (overflow) return Status::Error("tensor needs more than 2^32 - 1 sparse entries");
  while (row < rows) m.row_ptr[++row] = static_cast<uint32_t>(m.delta.size());
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
