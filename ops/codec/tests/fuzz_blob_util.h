// Helper of the fuzz targets: where a blob's CRC sits, so that a target can recompute it and let mutated
// bodies past the checksum (otherwise nearly every mutation stops at the CRC check).
#ifndef DC_CODEC_TESTS_FUZZ_BLOB_UTIL_H_
#define DC_CODEC_TESTS_FUZZ_BLOB_UTIL_H_

#include <cstddef>
#include <cstdint>

namespace dc_fuzz {

// Offset of the CRC field when the blob's prefix (magic, version, body-length varint) is complete.
inline bool CrcOffset(const uint8_t* data, size_t size, size_t* offset) {
  if (size < 4 || data[0] != 'D' || data[1] != 'C') return false;
  size_t pos = 3;
  while (pos < size && pos < 13 && (data[pos] & 0x80)) ++pos;
  if (pos >= size || pos >= 13) return false;
  *offset = pos + 1;
  return *offset + 4 <= size;
}

}  // namespace dc_fuzz

#endif  // DC_CODEC_TESTS_FUZZ_BLOB_UTIL_H_
