// The coder table (one entry per flags coder id) and the section decoding that dispatches through it.
#include <new>

#include "codec_internal.h"

namespace dc {
namespace codec {
namespace internal {

const CoderOps* FindCoder(uint8_t id) {
  static const CoderOps* const kCoders[] = {&kRawCoder, &kHuffmanCoder, &kRansCoder};
  for (const CoderOps* ops : kCoders) {
    if (static_cast<uint8_t>(ops->id) == id) return ops;
  }
  return nullptr;
}

// Decodes a section into out[0, s.count).
Status DecodeSectionInto(const uint8_t* data, const Section& s, uint8_t* out) {
  const CoderOps* ops = FindCoder(static_cast<uint8_t>(s.coder));
  if (ops == nullptr) return Status::Error("unsupported coder");
  return ops->decode_section(data, s, out);
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

}  // namespace internal
}  // namespace codec
}  // namespace dc
