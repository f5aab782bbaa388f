// The container of dc_keras's weight format (FORMAT.md): magic, version, body length, CRC32, header,
// codebook, and the two stream sections, each read by its coder (CoderOps in codec_internal.h). Parse
// validates all of it once; the public entry points of dc_codec.h that need no decoding live here too.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>

#include "codec_internal.h"

namespace dc {
namespace codec {
namespace internal {
namespace {

constexpr uint8_t kMagic0 = 'D', kMagic1 = 'C';
constexpr uint8_t kFlagDense = 0x01, kFlagFp16 = 0x02;
constexpr int kBlockAxisShift = 6;  // flags bits 6-7: block axis (version 2; reserved in version 1)

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

// Magic, version, body length and CRC32 over the body; leaves r->pos at the body's first byte.
Status ReadContainer(const uint8_t* data, size_t size, ByteReader* r, int* version_out) {
  if (data == nullptr && size) return Status::Error("null blob pointer");
  if (size < 2 || data[0] != kMagic0 || data[1] != kMagic1) {
    return Status::Error("bad magic: expected \"DC\" (a dc_keras weight blob)");
  }
  *r = ByteReader{data, 2, size};
  uint8_t version;
  Status st = r->U8(&version, "format version");
  if (!st.ok()) return st;
  if (version < kMinFormatVersion || version > kFormatVersion) {
    return Status::Error("unsupported format version " + Str(version) + ": this reader understands versions " +
                         Str(kMinFormatVersion) + " to " + Str(kFormatVersion));
  }
  *version_out = version;
  uint64_t body_len;
  st = r->Varint(&body_len, "body length", kMaxBodyLen);
  if (!st.ok()) return st;
  if (r->Remaining() < 4) return Status::Error("truncated blob: missing CRC32");
  const size_t at = r->pos;
  const uint32_t crc_stored = static_cast<uint32_t>(data[at]) | static_cast<uint32_t>(data[at + 1]) << 8 |
                              static_cast<uint32_t>(data[at + 2]) << 16 | static_cast<uint32_t>(data[at + 3]) << 24;
  r->pos += 4;
  if (r->Remaining() < body_len) {
    return Status::Error("truncated blob: header declares " + Str(body_len) + " body bytes, only " +
                         Str(r->Remaining()) + " present");
  }
  if (r->Remaining() > body_len) {
    return Status::Error("corrupt blob: " + Str(r->Remaining() - body_len) + " trailing bytes after the declared body");
  }
  const uint32_t crc = Crc32(data + r->pos, r->Remaining());
  if (crc != crc_stored) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "CRC32 mismatch: stored %08x, computed %08x (blob corrupted)", crc_stored, crc);
    return Status::Error(buf);
  }
  return Status::Ok();
}

// Flags byte (layout, codebook precision, the two coder ids, the block axis) and, for a block layout, the
// block length byte after it.
Status ReadFlags(ByteReader* r, BlobInfo* info) {
  uint8_t flags;
  Status st = r->U8(&flags, "flags");
  if (!st.ok()) return st;
  const uint8_t block_axis = flags >> kBlockAxisShift;
  if (block_axis && info->format_version < 2) {
    return Status::Error("unsupported feature flags (reserved bits set: written by a newer dc_keras?)");
  }
  if (block_axis == 3) return Status::Error("corrupt blob: unknown block axis 3 in flags");
  info->dense_layout = flags & kFlagDense;
  if (block_axis) {
    if (info->dense_layout) return Status::Error("corrupt blob: dense layout with a block axis");
    uint8_t block_len;
    if (!(st = r->U8(&block_len, "block length")).ok()) return st;
    if (block_len != 4 && block_len != 8 && block_len != 16) {
      return Status::Error("corrupt blob: block length " + Str(block_len) + " (must be 4, 8 or 16)");
    }
    info->block_layout = true;
    info->block_axis = static_cast<BlockAxis>(block_axis);
    info->block_len = block_len;
  }
  info->codebook_fp16 = flags & kFlagFp16;
  const uint8_t code_coder = (flags >> 2) & 3, delta_coder = (flags >> 4) & 3;
  for (const uint8_t id : {code_coder, delta_coder}) {
    if (FindCoder(id) == nullptr) return Status::Error("unsupported coder id " + Str(id) + " in flags");
  }
  if (info->dense_layout && delta_coder) return Status::Error("corrupt blob: dense layout with a delta-stream coder");
  info->code_coder = static_cast<Coder>(code_coder);
  info->delta_coder = static_cast<Coder>(delta_coder);
  return Status::Ok();
}

// Rank and dimensions; sets info->shape and info->num_elements.
Status ReadShape(ByteReader* r, BlobInfo* info) {
  uint8_t ndim;
  Status st = r->U8(&ndim, "rank");
  if (!st.ok()) return st;
  if (ndim > kMaxRank) return Status::Error("header value too large: rank " + Str(ndim) + " exceeds 8");
  uint64_t elements = 1;
  for (int axis = 0; axis < ndim; ++axis) {
    uint64_t dim;
    st = r->Varint(&dim, "dimension " + Str(axis), kMaxElements);
    if (!st.ok()) return st;
    info->shape.push_back(static_cast<int64_t>(dim));
    // Both factors are <= 2^32 - 1 here, so the product fits in 64 bits before the check.
    elements *= dim;
    if (elements > kMaxElements) {
      return Status::Error("header value too large: tensor exceeds " + Str(kMaxElements) + " elements");
    }
  }
  info->num_elements = elements;
  return Status::Ok();
}

// Widths byte and the centroid / nonzero / entry counts, checked against each other and the tensor.
Status ReadCounts(ByteReader* r, BlobInfo* info) {
  uint8_t widths;
  Status st = r->U8(&widths, "widths");
  if (!st.ok()) return st;
  info->bits = widths & 15;
  info->index_bits = widths >> 4;
  if (info->bits < 1 || info->bits > 8) return Status::Error("corrupt blob: bits " + Str(info->bits) + " outside 1..8");
  if (info->dense_layout && info->index_bits) {
    return Status::Error("corrupt blob: index_bits " + Str(info->index_bits) + " in dense layout (must be 0)");
  }
  if (!info->dense_layout && (info->index_bits < 2 || info->index_bits > 8)) {
    return Status::Error("corrupt blob: index_bits " + Str(info->index_bits) + " outside 2..8");
  }
  const uint64_t elements = info->num_elements;
  uint64_t k, nnz, entries;
  if (!(st = r->Varint(&k, "number of centroids", 1u << info->bits)).ok()) return st;
  // The delta stream walks the tensor's positions, or the block grid's in a block layout.
  const uint64_t positions = WalkPositions(*info);
  if (!(st = r->Varint(&nnz, info->block_layout ? "number of blocks" : "number of nonzeros", positions)).ok())
    return st;
  if (info->dense_layout) {
    entries = elements;
    if (elements && !k) return Status::Error("corrupt blob: dense layout without a codebook");
  } else {
    if (!(st = r->Varint(&entries, "number of entries", kMaxElements)).ok()) return st;
    if (entries < nnz)
      return Status::Error("corrupt blob: " + Str(entries) + " entries cannot hold " + Str(nnz) + " nonzeros");
    if (nnz && !k) return Status::Error("corrupt blob: nonzeros without a codebook");
    // Every filler advances the cursor by M and every real entry by at least 1, within the walked positions.
    const uint64_t step = (1u << info->index_bits) - 1;
    if ((entries - nnz) * step + nnz > positions) {
      return Status::Error("corrupt blob: " + Str(nnz) + (info->block_layout ? " blocks and " : " nonzeros and ") +
                           Str(entries - nnz) + " fillers overrun " +
                           (info->block_layout ? "a block grid of " + Str(positions) + " blocks"
                                               : "a tensor of " + Str(elements) + " elements"));
    }
  }
  info->num_centroids = static_cast<uint32_t>(k);
  info->num_nonzeros = nnz;
  info->num_entries = entries;
  return Status::Ok();
}

// The float32 or half codebook; non-finite values are refused and -0.0 reads as +0.0.
Status ReadCodebook(ByteReader* r, Parsed* p) {
  BlobInfo& info = p->info;
  const size_t start = r->pos;
  const uint64_t width = info.codebook_fp16 ? 2 : 4;
  const uint64_t bytes = info.num_centroids * width;
  Status st = r->Skip(bytes, "codebook");
  if (!st.ok()) return st;
  for (uint64_t i = 0; i < info.num_centroids; ++i) {
    const uint8_t* b = r->data + start + i * width;
    float v;
    if (info.codebook_fp16) {
      v = HalfToFloat(static_cast<uint16_t>(b[0] | b[1] << 8));
    } else {
      const uint32_t u = static_cast<uint32_t>(b[0]) | static_cast<uint32_t>(b[1]) << 8 |
                         static_cast<uint32_t>(b[2]) << 16 | static_cast<uint32_t>(b[3]) << 24;
      std::memcpy(&v, &u, 4);
    }
    if (!std::isfinite(v)) return Status::Error("corrupt blob: codebook holds a non-finite value");
    p->codebook[i] = IsZero(v) ? 0.0f : v;  // so that every decoder yields identical bytes
  }
  info.codebook_bytes = bytes;
  return Status::Ok();
}

// Reads one stream section with its coder; returns its size in bytes through *bytes.
Status ReadSection(ByteReader* r, const char* name, Coder coder, uint64_t count, uint32_t alphabet, int width,
                   Section* s, uint64_t* bytes) {
  s->name = name;
  s->coder = coder;
  s->count = count;
  s->alphabet = alphabet;
  s->width = width;
  s->start = r->pos;
  Status st = FindCoder(static_cast<uint8_t>(coder))->parse_section(r, s);
  if (!st.ok()) return st;
  s->end = r->pos;
  *bytes = s->end - s->start;
  return Status::Ok();
}

// The delta section (sparse layout with entries) and the code section (any codebook indices).
Status ReadSections(ByteReader* r, Parsed* p) {
  BlobInfo& info = p->info;
  Status st;
  p->has_delta = !info.dense_layout && info.num_entries > 0;
  if (p->has_delta) {
    st = ReadSection(r, "delta", info.delta_coder, info.num_entries, 1u << info.index_bits, info.index_bits,
                     &p->delta, &info.delta_stream_bytes);
    if (!st.ok()) return st;
  }
  const uint64_t code_count = CodeCount(info);
  p->has_code = code_count > 0;
  if (p->has_code) {
    st = ReadSection(r, "code", info.code_coder, code_count, info.num_centroids, info.bits, &p->code,
                     &info.code_stream_bytes);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

}  // namespace

Status ReadLaneHeader(ByteReader* r, const Section& s, uint32_t max_lanes, uint64_t* lanes, uint64_t* payload_len) {
  Status st = r->Varint(lanes, std::string("lane count of the ") + s.name + " stream", max_lanes);
  if (!st.ok()) return st;
  if (*lanes < 1 || *lanes > std::max<uint64_t>(1, s.count)) {
    return Status::Error(std::string("corrupt blob: ") + s.name + " stream has " + Str(*lanes) + " lanes for " +
                         Str(s.count) + " symbols");
  }
  return r->Varint(payload_len, std::string("payload length of the ") + s.name + " stream", r->Remaining());
}

Status Parse(const uint8_t* data, size_t size, Parsed* p) {
  ByteReader r{data, 0, 0};
  int version = 0;
  Status st = ReadContainer(data, size, &r, &version);
  if (!st.ok()) return st;
  p->info = BlobInfo();
  p->info.format_version = version;
  if (!(st = ReadFlags(&r, &p->info)).ok()) return st;
  if (!(st = ReadShape(&r, &p->info)).ok()) return st;
  if (!(st = ReadCounts(&r, &p->info)).ok()) return st;
  p->info.header_bytes = r.pos;
  if (!(st = ReadCodebook(&r, p)).ok()) return st;
  if (!(st = ReadSections(&r, p)).ok()) return st;
  if (r.pos != size) return Status::Error("corrupt blob: " + Str(size - r.pos) + " unused bytes after the streams");
  p->info.total_bytes = size;
  return Status::Ok();
}

}  // namespace internal

using internal::Parsed;
using internal::Str;

const char* CoderName(Coder coder) {
  const internal::CoderOps* ops = internal::FindCoder(static_cast<uint8_t>(coder));
  return ops ? ops->name : "unknown";
}

uint32_t Crc32(const uint8_t* data, size_t size, uint32_t crc) {
  const internal::CrcTables& tb = internal::Tables();
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
  Status st = internal::Parse(data, size, &p);
  if (st.ok()) *info = std::move(p.info);
  return st;
}

Status DecodeStreams(const uint8_t* data, size_t size, std::vector<uint8_t>* delta, std::vector<uint8_t>* code) {
  if (delta == nullptr || code == nullptr) return Status::Error("null output pointer");
  Parsed p;
  Status st = internal::Parse(data, size, &p);
  if (!st.ok()) return st;
  return internal::DecodeParsedStreams(data, p, delta, code);
}

Status DecodeStreamsInto(const uint8_t* data, size_t size, uint8_t* delta, size_t delta_len, uint8_t* code,
                         size_t code_len) {
  Parsed p;
  Status st = internal::Parse(data, size, &p);
  if (!st.ok()) return st;
  const uint64_t want_delta = p.has_delta ? p.delta.count : 0, want_code = p.has_code ? p.code.count : 0;
  if (delta_len != want_delta || code_len != want_code) {
    return Status::Error("output has " + Str(delta_len) + " and " + Str(code_len) + " symbols, the blob has " +
                         Str(want_delta) + " and " + Str(want_code));
  }
  if ((want_delta && delta == nullptr) || (want_code && code == nullptr)) return Status::Error("null output pointer");
  if (p.has_delta && !(st = internal::DecodeSectionInto(data, p.delta, delta)).ok()) return st;
  if (p.has_code && !(st = internal::DecodeSectionInto(data, p.code, code)).ok()) return st;
  return Status::Ok();
}

const BlobInfo& ParsedBlob::info() const {
  static const BlobInfo kEmpty;
  return parsed_ ? parsed_->info : kEmpty;
}

Status OpenBlob(const uint8_t* data, size_t size, ParsedBlob* out) {
  if (out == nullptr) return Status::Error("null ParsedBlob pointer");
  *out = ParsedBlob();
  auto parsed = std::make_shared<Parsed>();
  Status st = internal::Parse(data, size, parsed.get());
  if (!st.ok()) return st;
  out->data_ = data;
  out->size_ = size;
  out->parsed_ = std::move(parsed);
  return Status::Ok();
}

namespace {

// Bytes of the two symbol-stream buffers DecodeParsedStreams fills (one byte per symbol).
uint64_t StreamBufferBytes(const BlobInfo& info) {
  const uint64_t delta = info.dense_layout ? 0 : info.num_entries;
  return delta + internal::CodeCount(info);
}

}  // namespace

uint64_t BlockSparseDecodeBytes(const BlobInfo& info) {
  if (!info.block_layout) return 0;
  uint64_t grid_rows, grid_cols;
  internal::BlockGrid(info, &grid_rows, &grid_cols);
  // Group offsets, one start per block, block_len codes per block, the codebook; the streams meanwhile.
  return StreamBufferBytes(info) + (grid_rows + 1) * sizeof(uint32_t) + info.num_nonzeros * sizeof(uint32_t) +
         internal::CodeCount(info) + uint64_t{info.num_centroids} * sizeof(float);
}

uint64_t DenseDecodeBytes(const BlobInfo& info) {
  // A block layout is decoded through its block form, which stays alive while the floats are written.
  return (info.block_layout ? BlockSparseDecodeBytes(info) : StreamBufferBytes(info)) +
         info.num_elements * sizeof(float);
}

uint64_t SparseDecodeBytes(const BlobInfo& info) {
  const uint64_t rows = info.shape.empty() ? 1 : static_cast<uint64_t>(info.shape[0]);
  if (info.block_layout) {
    // The block form, plus a SparseMatrix of at most every stored weight and one filler per 255 positions.
    const uint64_t entries = std::min(internal::CodeCount(info), info.num_elements) +
                             info.num_elements / kSparseFillerStep;
    return BlockSparseDecodeBytes(info) + (rows + 1) * sizeof(uint32_t) + 2 * entries +
           uint64_t{info.num_centroids} * sizeof(float);
  }
  // In-memory fillers never outnumber the blob's own (their step, 255, is the largest the format has, and a
  // gap restarted at a row's start is shorter than the blob's gap); a dense-layout blob has none, and gets
  // at most one per 255 positions.
  const uint64_t entries = info.dense_layout ? info.num_nonzeros + info.num_elements / kSparseFillerStep
                                             : info.num_entries;
  return StreamBufferBytes(info) + (rows + 1) * sizeof(uint32_t) + 2 * entries +
         uint64_t{info.num_centroids} * sizeof(float);
}

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

}  // namespace codec
}  // namespace dc
