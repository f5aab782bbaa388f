// Canonical Huffman coder (FORMAT.md "huffman"): code lengths table, up to 16 lanes, decoded with 12-bit
// multi-symbol lookups (the fast path) and a bounds-checked tail per lane.
#include <algorithm>
#include <memory>
#include <new>

#include "codec_internal.h"

namespace dc {
namespace codec {
namespace internal {
namespace {

constexpr uint32_t kMaxHuffmanLanes = 16;

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

Status ParseHuffmanSection(ByteReader* r, Section* s) {
  Status st = ParseHuffmanTable(r, s);
  if (!st.ok()) return st;
  uint64_t lanes, payload_len;
  if (!(st = ReadLaneHeader(r, *s, kMaxHuffmanLanes, &lanes, &payload_len)).ok()) return st;
  s->lanes = static_cast<uint32_t>(lanes);
  s->lane_sizes.clear();
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
  s->payload_start = r->pos;
  return r->Skip(payload_len, std::string(s->name) + " stream payload");
}

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

}  // namespace

const CoderOps kHuffmanCoder = {Coder::kHuffman, "huffman", ParseHuffmanSection, DecodeHuffman};

}  // namespace internal
}  // namespace codec
}  // namespace dc
