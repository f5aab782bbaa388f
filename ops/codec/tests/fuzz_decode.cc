// libFuzzer target: arbitrary bytes through ParseInfo, DecodeDense, DecodeSparse and DecodeBlockSparse.
//
// Beyond "no crash, no sanitizer report" it checks the decoders against each other: when both succeed,
// the sparse form must expand to exactly the dense output, and every SparseMatrix invariant promised
// in dc_codec.h must hold; a block-layout blob's block form (BlockSparseMatrix's contract) must expand to
// the same output, and the block decoder must refuse every other blob. Tensors above 2^20 elements are only parsed: their allocation size is the
// caller's choice, and a fuzzer-made header can legitimately ask for gigabytes.
//
// Mutated inputs almost never carry a valid CRC32, which would stop the fuzzer at the checksum. So
// each input runs twice: as given (exercising the CRC check), and with its CRC field recomputed,
// which lets mutations reach the tables and stream decoders.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "dc_codec.h"
#include "fuzz_blob_util.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

uint32_t Bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

void RunOne(const uint8_t* data, size_t size);

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  RunOne(data, size);
  size_t offset;
  if (dc_fuzz::CrcOffset(data, size, &offset)) {
    std::vector<uint8_t> fixed(data, data + size);
    const uint32_t crc = dc::codec::Crc32(fixed.data() + offset + 4, size - offset - 4);
    for (int i = 0; i < 4; ++i) fixed[offset + i] = static_cast<uint8_t>(crc >> (8 * i));
    RunOne(fixed.data(), fixed.size());
  }
  return 0;
}

namespace {

void RunOne(const uint8_t* data, size_t size) {
  using namespace dc::codec;
  BlobInfo info;
  if (!ParseInfo(data, size, &info).ok()) return;
  Check(info.header_bytes + info.codebook_bytes + info.delta_stream_bytes + info.code_stream_bytes ==
        info.total_bytes);
  if (info.num_elements > (1u << 20)) return;
  std::vector<float> dense(info.num_elements);
  const Status dense_status = DecodeDense(data, size, dense.data(), dense.size());
  SparseMatrix m;
  const Status sparse_status = DecodeSparse(data, size, &m);
  Check(dense_status.ok() == sparse_status.ok());
  if (!dense_status.ok()) return;
  Check(m.rows >= 0 && m.cols >= 0 && static_cast<uint64_t>(m.rows) * static_cast<uint64_t>(m.cols) ==
                                          (info.shape.empty() ? 1 : info.num_elements));
  Check(m.row_ptr.size() == static_cast<size_t>(m.rows) + 1 && m.row_ptr[0] == 0);
  Check(m.row_ptr.back() == m.delta.size() && m.delta.size() == m.code.size());
  std::vector<float> rebuilt(info.num_elements, 0.0f);
  for (int64_t r = 0; r < m.rows; ++r) {
    Check(m.row_ptr[r] <= m.row_ptr[r + 1]);
    int64_t col = -1;
    for (uint32_t e = m.row_ptr[r]; e < m.row_ptr[r + 1]; ++e) {
      if (m.delta[e] == 0) {
        Check(e + 1 < m.row_ptr[r + 1]);  // fillers only precede a real entry
        col += kSparseFillerStep;
        continue;
      }
      col += m.delta[e];
      Check(col < m.cols && m.code[e] < m.codebook.size());
      rebuilt[static_cast<size_t>(r * m.cols + col)] = m.codebook[m.code[e]];
    }
  }
  for (size_t i = 0; i < dense.size(); ++i) Check(Bits(dense[i]) == Bits(rebuilt[i]));

  BlockSparseMatrix b;
  const Status block_status = DecodeBlockSparse(data, size, &b);
  Check(block_status.ok() == info.block_layout);
  if (!info.block_layout) return;
  Check(b.rows == m.rows && b.cols == m.cols && b.axis == info.block_axis && b.block_len == info.block_len);
  const int64_t L = b.block_len;
  Check(b.group_ptr.size() == static_cast<size_t>(b.NumGroups()) + 1 && b.group_ptr[0] == 0 &&
        b.group_ptr.back() == b.block_start.size() && b.codes.size() == b.block_start.size() * L);
  std::fill(rebuilt.begin(), rebuilt.end(), 0.0f);
  for (int64_t g = 0; g < b.NumGroups(); ++g) {
    Check(b.group_ptr[g] <= b.group_ptr[g + 1]);
    int64_t previous = -1;
    for (uint32_t k = b.group_ptr[g]; k < b.group_ptr[g + 1]; ++k) {
      const int64_t start = b.block_start[k];
      Check(start > previous && start < b.cols && (b.axis == BlockAxis::kRows || start % L == 0));
      previous = start;
      for (int64_t i = 0; i < L; ++i) {
        const uint8_t code = b.codes[k * L + i];
        Check(code < b.codebook.size());
        const int64_t r = b.axis == BlockAxis::kCols ? g : g * L + i;
        const int64_t c = b.axis == BlockAxis::kCols ? start + i : start;
        if (r < b.rows && c < b.cols) {
          rebuilt[static_cast<size_t>(r * b.cols + c)] = b.codebook[code];
        } else {
          Check(code == 0);
        }
      }
    }
  }
  for (size_t i = 0; i < dense.size(); ++i) Check(Bits(dense[i]) == Bits(rebuilt[i]));
}

}  // namespace
