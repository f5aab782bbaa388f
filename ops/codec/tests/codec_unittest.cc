// Standalone unit tests of the C++ decoder core, meant to run under -fsanitize=address,undefined.
//
// Usage: codec_unittest [VECTOR_DIR]
// Built-in tests cover CRC32, the container checks and hand-built headers. With VECTOR_DIR (written by
// tests/test_codec_native.py with the Python encoder), every NAME.blob is decoded and compared with
// NAME.f32 (expected float32 bytes, C order), then truncated and bit-flipped in many ways: every
// corruption must come back as an error Status (or, once the CRC is recomputed, as a consistent
// decode), never as a crash or a sanitizer report.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>  // _mm_getcsr / _mm_setcsr: the FTZ and DAZ bits
#endif

#include "dc_codec.h"

using dc::codec::BlobInfo;
using dc::codec::BlockAxis;
using dc::codec::BlockSparseMatrix;
using dc::codec::SparseMatrix;
using dc::codec::Status;

namespace {

int g_failures = 0;
int g_checks = 0;

#define EXPECT(cond, ...)                                         \
  do {                                                            \
    ++g_checks;                                                   \
    if (!(cond)) {                                                \
      ++g_failures;                                               \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                          \
      std::fprintf(stderr, "\n");                                 \
    }                                                             \
  } while (0)

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void PutVarint(std::vector<uint8_t>* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<uint8_t>(v));
}

std::vector<uint8_t> Assemble(const std::vector<uint8_t>& body, uint8_t version = 1) {
  std::vector<uint8_t> blob = {'D', 'C', version};
  PutVarint(&blob, body.size());
  const uint32_t crc = dc::codec::Crc32(body.data(), body.size());
  for (int i = 0; i < 4; ++i) blob.push_back(static_cast<uint8_t>(crc >> (8 * i)));
  blob.insert(blob.end(), body.begin(), body.end());
  return blob;
}

// Offset of the body (after magic, version, length varint and CRC) of a well-formed blob.
size_t BodyOffset(const std::vector<uint8_t>& blob) {
  size_t pos = 3;
  while (blob[pos] & 0x80) ++pos;
  return pos + 1 + 4;
}

void FixCrc(std::vector<uint8_t>* blob) {
  const size_t body = BodyOffset(*blob);
  const uint32_t crc = dc::codec::Crc32(blob->data() + body, blob->size() - body);
  for (int i = 0; i < 4; ++i) (*blob)[body - 4 + i] = static_cast<uint8_t>(crc >> (8 * i));
}

bool Contains(const std::string& haystack, const char* needle) { return haystack.find(needle) != std::string::npos; }

std::vector<float> SparseToDense(const SparseMatrix& m) {
  std::vector<float> out(static_cast<size_t>(m.rows * m.cols), 0.0f);
  for (int64_t r = 0; r < m.rows; ++r) m.ExpandRow(r, out.data() + r * m.cols);
  return out;
}

// Expands a block form densely (positions past the edge ignored).
std::vector<float> BlockToDense(const BlockSparseMatrix& m) {
  std::vector<float> out(static_cast<size_t>(m.rows * m.cols), 0.0f);
  const int64_t L = m.block_len;
  for (int64_t g = 0; g < m.NumGroups(); ++g) {
    for (uint32_t b = m.group_ptr[g]; b < m.group_ptr[g + 1]; ++b) {
      for (int64_t i = 0; i < L; ++i) {
        const int64_t r = m.axis == BlockAxis::kCols ? g : g * L + i;
        const int64_t c = m.axis == BlockAxis::kCols ? m.block_start[b] + i : m.block_start[b];
        if (r < m.rows && c < m.cols) out[static_cast<size_t>(r * m.cols + c)] = m.codebook[m.codes[b * L + i]];
      }
    }
  }
  return out;
}

// Decodes with both entry points (and the block form for a block layout); if all succeed they must agree bit
// for bit.
Status DecodeBoth(const std::vector<uint8_t>& blob, std::vector<float>* dense) {
  BlobInfo info;
  Status st = dc::codec::ParseInfo(blob.data(), blob.size(), &info);
  if (!st.ok()) return st;
  if (info.num_elements > (1u << 24)) return Status::Error("too large for a test");
  dense->assign(info.num_elements, 0.0f);
  const Status d = dc::codec::DecodeDense(blob.data(), blob.size(), dense->data(), dense->size());
  SparseMatrix m;
  const Status s = dc::codec::DecodeSparse(blob.data(), blob.size(), &m);
  EXPECT(d.ok() == s.ok(), "dense '%s' vs sparse '%s'", d.message().c_str(), s.message().c_str());
  if (d.ok() && s.ok()) {
    const std::vector<float> rebuilt = SparseToDense(m);
    EXPECT(rebuilt.size() == dense->size() &&
               (rebuilt.empty() || std::memcmp(rebuilt.data(), dense->data(), rebuilt.size() * sizeof(float)) == 0),
           "sparse form does not expand to the dense decode");
    EXPECT(m.ResidentBytes() >= m.delta.size() * 2 + m.row_ptr.size() * 4, "ResidentBytes too small");
    // The header-only estimates callers check caps with must bound what decoding really holds.
    EXPECT(dc::codec::SparseDecodeBytes(info) >= m.ResidentBytes(), "SparseDecodeBytes %llu < resident %zu",
           static_cast<unsigned long long>(dc::codec::SparseDecodeBytes(info)), m.ResidentBytes());
    EXPECT(dc::codec::DenseDecodeBytes(info) >= dense->size() * sizeof(float), "DenseDecodeBytes too small");
  }
  if (info.block_layout) {
    BlockSparseMatrix b;
    const Status bs = dc::codec::DecodeBlockSparse(blob.data(), blob.size(), &b);
    EXPECT(bs.ok() == d.ok(), "dense '%s' vs block '%s'", d.message().c_str(), bs.message().c_str());
    if (bs.ok() && d.ok()) {
      const std::vector<float> rebuilt = BlockToDense(b);
      EXPECT(rebuilt.size() == dense->size() &&
                 (rebuilt.empty() || std::memcmp(rebuilt.data(), dense->data(), rebuilt.size() * 4) == 0),
             "block form does not expand to the dense decode");
      EXPECT(dc::codec::BlockSparseDecodeBytes(info) >= b.ResidentBytes(), "BlockSparseDecodeBytes %llu < %zu",
             static_cast<unsigned long long>(dc::codec::BlockSparseDecodeBytes(info)), b.ResidentBytes());
    }
  } else {
    BlockSparseMatrix b;
    const Status bs = dc::codec::DecodeBlockSparse(blob.data(), blob.size(), &b);
    EXPECT(!bs.ok() && (!d.ok() || Contains(bs.message(), "no block layout")), "block decode of '%s'",
           bs.message().c_str());
    EXPECT(dc::codec::BlockSparseDecodeBytes(info) == 0, "BlockSparseDecodeBytes of a blob without blocks");
  }
  return d;
}

// ------------------------------------------------------------------------------------------- built-ins

void TestCrc32() {
  const char* text = "123456789";
  EXPECT(dc::codec::Crc32(reinterpret_cast<const uint8_t*>(text), 9) == 0xCBF43926u, "CRC-32 check value");
  // Incremental use gives the same result as one call, including the 8-byte fast path boundaries.
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  const uint32_t whole = dc::codec::Crc32(data.data(), data.size());
  const uint32_t split = dc::codec::Crc32(data.data() + 13, data.size() - 13, dc::codec::Crc32(data.data(), 13));
  EXPECT(whole == split, "incremental CRC %08x vs %08x", split, whole);
}

void TestStatus() {
  EXPECT(Status::Ok().ok() && Status::Ok().message().empty(), "Ok status");
  const Status e = Status::Error("boom");
  EXPECT(!e.ok() && e.message() == "boom", "Error status");
}

void TestContainerErrors() {
  BlobInfo info;
  Status st = dc::codec::ParseInfo(nullptr, 0, &info);
  EXPECT(!st.ok() && Contains(st.message(), "bad magic"), "empty: %s", st.message().c_str());
  const uint8_t bad_magic[] = {'X', 'C', 1, 0, 0, 0, 0, 0};
  st = dc::codec::ParseInfo(bad_magic, sizeof(bad_magic), &info);
  EXPECT(!st.ok() && Contains(st.message(), "bad magic"), "%s", st.message().c_str());
  const uint8_t future[] = {'D', 'C', 3, 0, 0, 0, 0, 0};
  st = dc::codec::ParseInfo(future, sizeof(future), &info);
  EXPECT(!st.ok() && Contains(st.message(), "unsupported format version 3"), "%s", st.message().c_str());
  const uint8_t ancient[] = {'D', 'C', 0, 0, 0, 0, 0, 0};
  st = dc::codec::ParseInfo(ancient, sizeof(ancient), &info);
  EXPECT(!st.ok() && Contains(st.message(), "unsupported format version 0"), "%s", st.message().c_str());
  const uint8_t huge_len[] = {'D', 'C', 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F};
  st = dc::codec::ParseInfo(huge_len, sizeof(huge_len), &info);
  EXPECT(!st.ok() && Contains(st.message(), "too large"), "%s", st.message().c_str());
  const uint8_t short_body[] = {'D', 'C', 1, 10, 0, 0, 0, 0, 1};
  st = dc::codec::ParseInfo(short_body, sizeof(short_body), &info);
  EXPECT(!st.ok() && Contains(st.message(), "truncated"), "%s", st.message().c_str());
}

// Body of a sparse, raw-coded 2x3 tensor [[0, 1.5, 0], [0, 0, -2]] with bits=1, index_bits=2.
std::vector<uint8_t> SmallBody() {
  std::vector<uint8_t> body = {0x00, 2, 2, 3, 0x21, 2, 2, 2};  // flags, rank, dims, widths, k, nnz, entries
  const float cb[2] = {-2.0f, 1.5f};
  const uint8_t* p = reinterpret_cast<const uint8_t*>(cb);
  body.insert(body.end(), p, p + 8);  // little-endian host
  // Positions 1 and 5: deltas 2 (from -1) and 4 -> 3 + 1 needs a filler: M = 3, gap 4 = filler + 1.
  // Delta stream [2, 0, 1] at 2 bits = 10 00 01 00 -> 0x84; codes [1, 0] at 1 bit = 10 000000 -> 0x80.
  body[7] = 3;  // entries = nnz + 1 filler
  body.push_back(0x84);
  body.push_back(0x80);
  return body;
}

void TestHandBuiltBlob() {
  const std::vector<uint8_t> blob = Assemble(SmallBody());
  BlobInfo info;
  Status st = dc::codec::ParseInfo(blob.data(), blob.size(), &info);
  EXPECT(st.ok(), "%s", st.message().c_str());
  EXPECT(info.shape.size() == 2 && info.shape[0] == 2 && info.shape[1] == 3, "shape");
  EXPECT(info.bits == 1 && info.index_bits == 2 && info.num_centroids == 2, "widths");
  EXPECT(info.num_nonzeros == 2 && info.num_entries == 3 && !info.dense_layout, "counts");
  EXPECT(info.header_bytes + info.codebook_bytes + info.delta_stream_bytes + info.code_stream_bytes ==
             info.total_bytes, "byte accounting");
  std::vector<float> dense;
  st = DecodeBoth(blob, &dense);
  EXPECT(st.ok(), "%s", st.message().c_str());
  const float expected[6] = {0, 1.5f, 0, 0, 0, -2.0f};
  EXPECT(dense.size() == 6 && std::memcmp(dense.data(), expected, sizeof(expected)) == 0, "values");
  SparseMatrix m;
  st = dc::codec::DecodeSparse(blob.data(), blob.size(), &m);
  EXPECT(st.ok() && m.rows == 2 && m.cols == 3 && m.row_ptr == std::vector<uint32_t>({0, 1, 2}), "sparse rows");
  EXPECT(m.delta == std::vector<uint8_t>({2, 3}) && m.code == std::vector<uint8_t>({1, 0}), "sparse entries");
  EXPECT(m.NumNonzeros() == 2, "NumNonzeros");
  const float x[3] = {1, 2, 3};
  float y[2];
  m.MatVec(x, y);
  EXPECT(y[0] == 3.0f && y[1] == -6.0f, "MatVec %f %f", y[0], y[1]);
  std::vector<uint8_t> d, c;
  st = dc::codec::DecodeStreams(blob.data(), blob.size(), &d, &c);
  EXPECT(st.ok() && d == std::vector<uint8_t>({2, 0, 1}) && c == std::vector<uint8_t>({1, 0}), "streams");
  // Wrong output length is the caller's error, reported as such.
  float small[5];
  st = dc::codec::DecodeDense(blob.data(), blob.size(), small, 5);
  EXPECT(!st.ok() && Contains(st.message(), "output has 5 elements"), "%s", st.message().c_str());
}

// A dense-layout, raw-coded [3] tensor: codes {1, 0, 2} into centroids {0, the smallest denormal, 3}, nnz 2.
std::vector<uint8_t> DenormalDenseBody() {
  std::vector<uint8_t> body = {0x01, 1, 3, 0x02, 3, 2};
  const uint32_t centroids[3] = {0, 1, 0x40400000};
  for (uint32_t c : centroids)
    for (int i = 0; i < 4; ++i) body.push_back(static_cast<uint8_t>(c >> (8 * i)));
  body.push_back(0x48);  // 01 00 10 00
  return body;
}

// Decoding must not depend on the FPU's flush-to-zero / denormals-are-zero modes, which TensorFlow sets on
// the threads that run our ops: a denormal centroid decodes bit for bit and counts as a nonzero.
void TestDenormalsUnderFlushToZero() {
  const std::vector<uint8_t> blob = Assemble(DenormalDenseBody());
#if defined(__SSE__) || defined(__x86_64__)
  const unsigned saved = _mm_getcsr();
  _mm_setcsr(saved | 0x8040);  // FTZ (bit 15) and DAZ (bit 6)
#endif
  std::vector<float> dense;
  const Status st = DecodeBoth(blob, &dense);
#if defined(__SSE__) || defined(__x86_64__)
  _mm_setcsr(saved);
#endif
  EXPECT(st.ok(), "%s", st.message().c_str());
  uint32_t bits[3] = {7, 7, 7};
  if (dense.size() == 3) std::memcpy(bits, dense.data(), sizeof bits);
  EXPECT(bits[0] == 1 && bits[1] == 0 && bits[2] == 0x40400000, "decoded bits %08x %08x %08x", bits[0], bits[1],
         bits[2]);
}

void TestDecodeBytes() {
  BlobInfo info;
  info.shape = {1000, 10};
  info.num_elements = 10000;
  info.num_nonzeros = 30;
  info.num_entries = 40;
  info.num_centroids = 4;
  // Streams 40 + 30 bytes; 1001 row offsets, 2 bytes per entry, the codebook.
  EXPECT(dc::codec::SparseDecodeBytes(info) == 70 + 1001 * 4 + 80 + 16, "sparse estimate %llu",
         static_cast<unsigned long long>(dc::codec::SparseDecodeBytes(info)));
  EXPECT(dc::codec::DenseDecodeBytes(info) == 70 + 40000, "dense estimate");
  info.dense_layout = true;  // one code per position, at most one filler per 255 positions
  EXPECT(dc::codec::SparseDecodeBytes(info) == 10000 + 1001 * 4 + 2 * (30 + 39) + 16, "dense-layout estimate");
}

// A version-2 block blob: shape [2, 6], blocks of 4 columns, raw coders, index_bits 2, bits 2, codebook
// {-1, 0, 2}. Stored grid cells 1 (row 0, columns 4..7, two past the edge) and 2 (row 1, columns 0..3).
std::vector<uint8_t> BlockBody() {
  std::vector<uint8_t> body = {0x40, 4, 2, 2, 6, 0x22, 3, 2, 2};
  const uint32_t centroids[3] = {0xBF800000u, 0, 0x40000000u};
  for (uint32_t c : centroids)
    for (int i = 0; i < 4; ++i) body.push_back(static_cast<uint8_t>(c >> (8 * i)));
  body.push_back(0x90);  // deltas 2, 1
  body.push_back(0x80);  // block 0: codes 2 0 | 0 0 (past the edge)
  body.push_back(0x1A);  // block 1: codes 0 1 2 2
  return body;
}

void TestBlockBlob() {
  const std::vector<uint8_t> blob = Assemble(BlockBody(), 2);
  BlobInfo info;
  Status st = dc::codec::ParseInfo(blob.data(), blob.size(), &info);
  EXPECT(st.ok(), "%s", st.message().c_str());
  EXPECT(info.format_version == 2 && info.block_layout && info.block_axis == BlockAxis::kCols &&
             info.block_len == 4 && info.num_nonzeros == 2 && info.num_entries == 2, "block header");
  std::vector<float> dense;
  st = DecodeBoth(blob, &dense);
  EXPECT(st.ok(), "%s", st.message().c_str());
  const float expected[12] = {0, 0, 0, 0, 2, -1, -1, 0, 2, 2, 0, 0};
  EXPECT(dense.size() == 12 && std::memcmp(dense.data(), expected, sizeof(expected)) == 0, "block values");
  BlockSparseMatrix m;
  st = dc::codec::DecodeBlockSparse(blob.data(), blob.size(), &m);
  EXPECT(st.ok() && m.rows == 2 && m.cols == 6 && m.group_ptr == std::vector<uint32_t>({0, 1, 2}) &&
             m.block_start == std::vector<uint32_t>({4, 0}) &&
             m.codes == std::vector<uint8_t>({2, 0, 0, 0, 0, 1, 2, 2}),
         "block form: %s", st.message().c_str());
  SparseMatrix s;
  st = dc::codec::DecodeSparse(blob.data(), blob.size(), &s);
  EXPECT(st.ok() && s.NumNonzeros() == 5, "sparse form of a block blob keeps the 5 nonzeros (in-block zero dropped)");
  std::vector<uint8_t> d, c;
  st = dc::codec::DecodeStreams(blob.data(), blob.size(), &d, &c);
  EXPECT(st.ok() && d.size() == 2 && c.size() == 8, "block streams");

  struct Case {
    size_t index;
    uint8_t value;
    uint8_t version;
    const char* message;
  };
  const Case cases[] = {
      {0, 0xC0, 2, "unknown block axis 3"}, {1, 5, 2, "block length 5"},   {0, 0x41, 2, "dense layout with a block"},
      {0, 0x40, 1, "unsupported feature flags"}, {0, 0x40, 3, "unsupported format version 3"},
      {22, 0x81, 2, "past the matrix edge"},  {7, 5, 2, "number of blocks = 5 exceeds"},
      {21, 0xF0, 2, "outside the block grid"},
  };
  for (const Case& k : cases) {
    std::vector<uint8_t> body = BlockBody();
    body[k.index] = k.value;
    std::vector<float> out;
    st = DecodeBoth(Assemble(body, k.version), &out);
    EXPECT(!st.ok() && Contains(st.message(), k.message), "byte %zu = %d (v%d): got '%s', want '%s'", k.index,
           k.value, k.version, st.message().c_str(), k.message);
  }
  // The same grid walked by rows: [2, 6] has one band of 4 rows (two past the edge) and 6 columns.
  std::vector<uint8_t> rows_body = BlockBody();
  rows_body[0] = 0x80;
  std::vector<float> out;
  st = DecodeBoth(Assemble(rows_body, 2), &out);
  EXPECT(!st.ok() && Contains(st.message(), "past the matrix edge"), "%s", st.message().c_str());
  rows_body[22] = 0x00;  // block 0: codes 0 0 | 0 0, block 1: 0 1 | 2 2 (past the edge) -> still refused
  st = DecodeBoth(Assemble(rows_body, 2), &out);
  EXPECT(!st.ok() && Contains(st.message(), "past the matrix edge"), "%s", st.message().c_str());
  rows_body[23] = 0x10;  // block 1: codes 0 1 | 0 0; block 0 (column 1) is all code 0, i.e. -1
  st = DecodeBoth(Assemble(rows_body, 2), &out);
  const float rows_expected[12] = {0, -1, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0};
  EXPECT(st.ok() && out.size() == 12 && std::memcmp(out.data(), rows_expected, sizeof(rows_expected)) == 0,
         "rows block: %s", st.message().c_str());
}

void TestHeaderValidation() {
  struct Case {
    size_t index;
    uint8_t value;
    const char* message;
  };
  const Case cases[] = {
      {0, 0xC0, "unsupported feature flags"}, {0, 0x0C, "coder id 3"},   {0, 0x01, "dense layout"},
      {1, 9, "rank 9 exceeds"},               {4, 0x29, "bits 9"},      {4, 0x11, "index_bits 1"},
      {5, 3, "number of centroids = 3"},      {6, 7, "number of nonzeros = 7"}, {7, 1, "cannot hold"},
      {7, 4, "overrun"},                      {16, 0x86, "padding"},
  };
  for (const Case& c : cases) {
    std::vector<uint8_t> body = SmallBody();
    body[c.index] = c.value;
    const std::vector<uint8_t> blob = Assemble(body);
    std::vector<float> dense;
    const Status st = DecodeBoth(blob, &dense);
    EXPECT(!st.ok() && Contains(st.message(), c.message), "byte %zu = %d: got '%s', want '%s'", c.index, c.value,
           st.message().c_str(), c.message);
  }
  // A dimension beyond the element limit, and a varint that overflows 64 bits.
  std::vector<uint8_t> body = {0x00, 2};
  PutVarint(&body, 1ull << 31);
  PutVarint(&body, 1ull << 31);
  std::vector<float> unused;
  Status st = DecodeBoth(Assemble(body), &unused);
  EXPECT(!st.ok() && Contains(st.message(), "header value too large"), "%s", st.message().c_str());
  body = {0x00, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
  BlobInfo info;
  const std::vector<uint8_t> blob = Assemble(body);
  st = dc::codec::ParseInfo(blob.data(), blob.size(), &info);
  EXPECT(!st.ok() && Contains(st.message(), "too large"), "%s", st.message().c_str());
  // A flipped byte without a fixed CRC is a CRC mismatch.
  std::vector<uint8_t> flipped = Assemble(SmallBody());
  flipped.back() ^= 1;
  st = dc::codec::ParseInfo(flipped.data(), flipped.size(), &info);
  EXPECT(!st.ok() && Contains(st.message(), "CRC32 mismatch"), "%s", st.message().c_str());
  // Trailing bytes are rejected.
  std::vector<uint8_t> trailing = Assemble(SmallBody());
  trailing.push_back(0);
  st = dc::codec::ParseInfo(trailing.data(), trailing.size(), &info);
  EXPECT(!st.ok() && Contains(st.message(), "trailing"), "%s", st.message().c_str());
}

// ------------------------------------------------------------------------------------------- vectors

void TestVector(const std::string& dir, const std::string& name) {
  const std::vector<uint8_t> blob = ReadFile(dir + "/" + name + ".blob");
  const std::vector<uint8_t> expected = ReadFile(dir + "/" + name + ".f32");
  std::vector<float> dense;
  Status st = DecodeBoth(blob, &dense);
  EXPECT(st.ok(), "%s: %s", name.c_str(), st.message().c_str());
  if (!st.ok()) return;
  EXPECT(dense.size() * 4 == expected.size() &&
             (expected.empty() || std::memcmp(dense.data(), expected.data(), expected.size()) == 0),
         "%s: decoded values differ from the encoder's input", name.c_str());

  // Every truncation fails (the declared body length no longer matches).
  const size_t stride = blob.size() > 100 ? blob.size() / 100 : 1;
  for (size_t len = 0; len < blob.size(); len += stride) {
    const std::vector<uint8_t> cut(blob.begin(), blob.begin() + static_cast<std::ptrdiff_t>(len));
    std::vector<float> out;
    st = DecodeBoth(cut, &out);
    EXPECT(!st.ok(), "%s truncated to %zu bytes decoded", name.c_str(), len);
  }
  // Every single bit flip fails (CRC, or the prefix checks), never crashes.
  const size_t bit_stride = blob.size() * 8 > 400 ? blob.size() * 8 / 400 : 1;
  for (size_t bit = 0; bit < blob.size() * 8; bit += bit_stride) {
    std::vector<uint8_t> bad = blob;
    bad[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    std::vector<float> out;
    st = DecodeBoth(bad, &out);
    EXPECT(!st.ok(), "%s with bit %zu flipped decoded", name.c_str(), bit);
    // With the CRC recomputed the flip reaches the tables and streams: any outcome but a crash or a
    // disagreement between the decoders (checked in DecodeBoth) is acceptable.
    if (bit / 8 >= BodyOffset(blob)) {
      FixCrc(&bad);
      DecodeBoth(bad, &out);
    }
  }
}

void TestVectors(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  EXPECT(d != nullptr, "cannot open %s", dir.c_str());
  if (d == nullptr) return;
  int count = 0;
  while (dirent* e = readdir(d)) {
    const std::string file = e->d_name;
    if (file.size() > 5 && file.compare(file.size() - 5, 5, ".blob") == 0) {
      TestVector(dir, file.substr(0, file.size() - 5));
      ++count;
    }
  }
  closedir(d);
  EXPECT(count > 0, "no .blob files in %s", dir.c_str());
  std::printf("%d test vectors\n", count);
}

}  // namespace

int main(int argc, char** argv) {
  TestCrc32();
  TestStatus();
  TestContainerErrors();
  TestHandBuiltBlob();
  TestBlockBlob();
  TestHeaderValidation();
  TestDenormalsUnderFlushToZero();
  TestDecodeBytes();
  if (argc > 1) TestVectors(argv[1]);
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
