// Interleaved rANS coder (FORMAT.md "rans"): 32-bit states, 16-bit renormalisation, up to 1024 lanes.
#include <algorithm>

#include "codec_internal.h"

namespace dc {
namespace codec {
namespace internal {
namespace {

constexpr uint32_t kMaxRansLanes = 1024;
constexpr int kRansMaxScale = 15;
constexpr uint32_t kRansL = 1u << 16;

Status ParseRansTable(ByteReader* r, Section* s) {
  uint8_t scale = 0;
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

Status ParseRansSection(ByteReader* r, Section* s) {
  Status st = ParseRansTable(r, s);
  if (!st.ok()) return st;
  uint64_t lanes, payload_len;
  if (!(st = ReadLaneHeader(r, *s, kMaxRansLanes, &lanes, &payload_len)).ok()) return st;
  s->lanes = static_cast<uint32_t>(lanes);
  s->lane_sizes.clear();
  if (payload_len < 4 * lanes || (payload_len - 4 * lanes) % 2) {
    return Status::Error(std::string("corrupt blob: rANS payload of the ") + s->name + " stream has " +
                         Str(payload_len) + " bytes, not 4*lanes plus whole 16-bit words");
  }
  s->payload_start = r->pos;
  return r->Skip(payload_len, std::string(s->name) + " stream payload");
}

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

}  // namespace

const CoderOps kRansCoder = {Coder::kRans, "rans", ParseRansSection, DecodeRans};

}  // namespace internal
}  // namespace codec
}  // namespace dc
