// Raw coder: fixed-width symbols, MSB first, zero padded to a byte (FORMAT.md "raw").
#include <string>

#include "codec_internal.h"

namespace dc {
namespace codec {
namespace internal {
namespace {

Status ParseRawSection(ByteReader* r, Section* s) {
  s->payload_start = r->pos;
  // count < 2^33 and width <= 8, so the product cannot overflow.
  return r->Skip((s->count * static_cast<uint64_t>(s->width) + 7) / 8, std::string("raw ") + s->name + " stream");
}

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

}  // namespace

const CoderOps kRawCoder = {Coder::kRaw, "raw", ParseRawSection, DecodeRaw};

}  // namespace internal
}  // namespace codec
}  // namespace dc
