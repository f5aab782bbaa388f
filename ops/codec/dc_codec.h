// dc_codec: decoder core for dc_keras's compressed weight format (see FORMAT.md beside this file).
//
// One blob holds one weight tensor after Deep Compression: pruned positions as relative indices,
// weight-shared values as codebook indices, both entropy coded (canonical Huffman, rANS or raw), plus
// the float codebook. This header is shared by the TFLite delegate, the TF custom op and the ctypes
// library, so it depends on nothing but the C++17 standard library and stays backward compatible.
//
// Safety contract: every function accepts arbitrary bytes. Decoding is bounds checked throughout and
// reports malformed input through Status; it never reads outside [data, data + size) and never writes
// outside the caller's output. Sizes are validated before anything is allocated.
#ifndef DC_KERAS_OPS_CODEC_DC_CODEC_H_
#define DC_KERAS_OPS_CODEC_DC_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace dc {
namespace codec {

// Newest format version this reader understands (it reads versions kMinFormatVersion..kFormatVersion; others
// are rejected with a message). Version 2 added the block layouts.
constexpr int kFormatVersion = 2;
constexpr int kMinFormatVersion = 1;
// Largest tensor a blob may describe (elements). Keeps row offsets and entry counts in uint32.
constexpr uint64_t kMaxElements = 0xFFFFFFFFull;
// Largest rank a blob may describe.
constexpr int kMaxRank = 8;
// Longest canonical Huffman code the format allows; decoders use a 2^12-entry lookup table.
constexpr int kMaxHuffmanBits = 12;
// Default cap on the bytes one decode may produce (dense floats, or the sparse form and its stream
// buffers), applied by the delegate and the TF ops before they decode; both let a caller raise it
// (delegate option / op attribute max_decoded_bytes). Far beyond any layer this project targets, far below
// the 2^32 - 1 elements a header may declare.
constexpr uint64_t kDefaultMaxDecodedBytes = uint64_t{1} << 31;
// Column step of a filler entry in SparseMatrix (the in-memory form, independent of index_bits).
constexpr int kSparseFillerStep = 255;

#if defined(__GNUC__) || defined(__clang__)
#define DC_CODEC_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define DC_CODEC_ALWAYS_INLINE inline
#endif

// Outcome of a codec call: ok, or an error with a human-readable message.
class Status {
 public:
  Status() = default;
  bool ok() const { return ok_; }
  const std::string& message() const { return message_; }
  static Status Ok() { return Status(); }
  static Status Error(std::string msg) { return Status(false, std::move(msg)); }

 private:
  Status(bool ok, std::string msg) : ok_(ok), message_(std::move(msg)) {}
  bool ok_ = true;
  std::string message_;
};

// Entropy coder of one index stream.
enum class Coder : uint8_t {
  kRaw = 0,      // fixed width: `bits` (code stream) or `index_bits` (delta stream) per symbol
  kHuffman = 1,  // canonical, length-limited to kMaxHuffmanBits, table-driven decoding
  kRans = 2,     // interleaved 32-bit rANS with 16-bit renormalisation
};

// Returns "raw", "huffman" or "rans" (or "unknown").
const char* CoderName(Coder coder);

// Which way the blocks of a block-sparse layout run, in the 2-D view of SparseMatrix below (rows = shape[0] = outputs of an
// FC layer, cols = inputs).
enum class BlockAxis : uint8_t {
  kCols = 1,  // a block is `block_len` consecutive columns of one row ("L consecutive inputs of one output")
  kRows = 2,  // a block is `block_len` consecutive rows of one column ("L consecutive outputs of one input")
};

// Everything the header says about a blob; filled by ParseInfo without decoding the streams.
struct BlobInfo {
  int format_version = 0;        // 1 or 2
  std::vector<int64_t> shape;    // C order; empty for a scalar
  int bits = 0;                  // codebook index width, 1..8 (num_centroids <= 2^bits)
  int index_bits = 0;            // relative index width, 2..8 (sparse layout); 0 in dense layout
  uint32_t num_centroids = 0;    // codebook entries, 0..256
  uint64_t num_nonzeros = 0;     // positions holding a nonzero weight; block layout: stored blocks
  uint64_t num_entries = 0;      // delta-stream entries: nonzeros + fillers (dense layout: all positions)
  bool dense_layout = false;     // true: one codebook index per position, zero being a codebook value
  bool block_layout = false;     // true: the delta stream lists whole aligned blocks of block_len weights
  BlockAxis block_axis = BlockAxis::kCols;  // block layout only: which way the blocks run (kCols or kRows)
  int block_len = 0;             // block layout only: 4, 8 or 16; 0 otherwise
  bool codebook_fp16 = false;    // codebook stored as IEEE half (decoded to float32)
  Coder delta_coder = Coder::kRaw;  // coder of the relative-index stream (sparse layout only)
  Coder code_coder = Coder::kRaw;   // coder of the codebook-index stream
  uint64_t num_elements = 0;     // prod(shape)
  // Byte accounting; the four parts sum to total_bytes.
  uint64_t header_bytes = 0;       // magic, version, lengths, CRC, flags, shape, counts
  uint64_t codebook_bytes = 0;     // num_centroids * (4 or 2)
  uint64_t delta_stream_bytes = 0; // delta stream section: its coder table, lane sizes and payload
  uint64_t code_stream_bytes = 0;  // code stream section: its coder table, lane sizes and payload
  uint64_t total_bytes = 0;
};

// Parses and validates the header: magic, version, reserved flags, declared sizes against the blob
// size, CRC32 over the body, value ranges, and the structure of both stream sections (tables, lane
// sizes). Does not decode the symbol streams, so a blob that passes may still fail to decode.
Status ParseInfo(const uint8_t* data, size_t size, BlobInfo* info);

namespace internal {
struct Parsed;
}  // namespace internal

// A blob whose container (magic, version, lengths, CRC32), header and stream tables passed validation once
// (OpenBlob). The decoders taking a ParsedBlob start from there, so a caller that checks the header before
// decoding reads and checksums the blob once. Refers to the caller's bytes: they must outlive it.
class ParsedBlob {
 public:
  bool valid() const { return parsed_ != nullptr; }
  // The header; a default BlobInfo when not valid().
  const BlobInfo& info() const;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // The codec's own view of the sections (codec_internal.h). Unchecked: valid() must be true.
  const internal::Parsed& parsed() const { return *parsed_; }

 private:
  friend Status OpenBlob(const uint8_t* data, size_t size, ParsedBlob* out);
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<const internal::Parsed> parsed_;
};

// What ParseInfo checks, kept for decoding: on success `out` refers to [data, data + size).
Status OpenBlob(const uint8_t* data, size_t size, ParsedBlob* out);

// Peak bytes DecodeDense allocates for a blob with header `info`, counting its float32 output (the
// caller's) and the decoded symbol streams it keeps meanwhile. Computed from the header alone, so a caller
// can refuse a blob whose few bytes declare gigabytes before anything is allocated.
uint64_t DenseDecodeBytes(const BlobInfo& info);
// Peak bytes DecodeSparse allocates for a blob with header `info`: the symbol streams plus an upper
// bound of the SparseMatrix it builds (row offsets, entries with their 255-step fillers, codebook).
uint64_t SparseDecodeBytes(const BlobInfo& info);
// Peak bytes DecodeBlockSparse allocates for a block-layout blob with header `info`: the symbol streams plus
// the BlockSparseMatrix (group offsets, block starts, block_len codes per block, codebook). 0 for a blob
// without a block layout (DecodeBlockSparse refuses it).
uint64_t BlockSparseDecodeBytes(const BlobInfo& info);

// Decodes the tensor as C-order float32. out_len must equal prod(shape). Pruned positions are +0.0f.
// Values are copied bit for bit: a denormal centroid decodes exactly whatever the FPU's flush-to-zero /
// denormals-are-zero modes (TensorFlow sets both on its threads), and only +-0.0 counts as zero.
Status DecodeDense(const uint8_t* data, size_t size, float* out, size_t out_len);
// Same for a blob already opened: no second parse or CRC pass.
Status DecodeDense(const ParsedBlob& blob, float* out, size_t out_len);

// The in-memory form kernels compute on. 2-D view: rows = shape[0], cols = prod(shape[1:]) (C order);
// a rank-0 tensor is 1x1, a rank-1 tensor of n elements is n x 1.
// Kernel loop per row r:
//   col = -1; for e in [row_ptr[r], row_ptr[r+1]): if (delta[e] == 0) { col += 255; continue; }
//   col += delta[e]; acc += codebook[code[e]] * x[col];
// DecodeSparse output always satisfies: fillers only precede a real entry of the same row, every column
// lies in [0, cols), every code is < codebook.size(), and row_ptr[rows] == delta.size() == code.size().
struct SparseMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<uint32_t> row_ptr;  // rows + 1 offsets into delta/code
  std::vector<uint8_t> delta;     // per entry: column step; 1..255 real nonzero, 0 filler (+255, no value)
  std::vector<uint8_t> code;      // per entry: codebook index (0 for fillers, ignored)
  std::vector<float> codebook;    // centroids (<= 256)

  // Bytes held by the vectors above (their capacities).
  size_t ResidentBytes() const {
    return row_ptr.capacity() * sizeof(uint32_t) + delta.capacity() + code.capacity() +
           codebook.capacity() * sizeof(float);
  }
  // Number of real (non-filler) entries.
  uint64_t NumNonzeros() const;
  // Calls fn(col, code) for each real entry of row r in column order, stepping over fillers: the walk of
  // the contract above, shared by every loop that reads this form entry by entry. Unchecked: r must be in
  // [0, rows). Always inlined so that kernels' hot loops (including their AVX2 clones) keep their speed.
  template <typename Fn>
  DC_CODEC_ALWAYS_INLINE void ForEachEntry(int64_t r, Fn&& fn) const {
    int64_t col = -1;
    for (uint32_t e = row_ptr[r], end = row_ptr[r + 1]; e < end; ++e) {
      if (delta[e] == 0) {
        col += kSparseFillerStep;
        continue;
      }
      col += delta[e];
      fn(col, code[e]);
    }
  }
  // Reference y = W x (y has rows elements, x has cols). Unchecked: for tests and fallbacks.
  void MatVec(const float* x, float* y) const;
  // Writes row r densely into out[0, cols). Unchecked: r must be in [0, rows).
  void ExpandRow(int64_t r, float* out) const;
};


// The in-memory form of a block-sparse blob: only whole aligned blocks are stored, every weight of a stored
// block has its own codebook index. Blocks at the matrix edge may reach past it (cols or rows not a multiple
// of block_len); their positions past the edge hold code 0 and mean nothing.
//   kCols: groups are rows (group_ptr has rows + 1 offsets); block_start[b] is the block's first column, a
//          multiple of block_len, increasing within a row.
//   kRows: groups are row bands of block_len rows (ceil(rows / block_len) + 1 offsets); block_start[b] is
//          the block's column, increasing within a band.
// codes holds block_len codes per block, block after block, each block's codes in row or column order.
struct BlockSparseMatrix {
  int64_t rows = 0, cols = 0;
  BlockAxis axis = BlockAxis::kCols;
  int block_len = 0;                   // 4, 8 or 16
  std::vector<uint32_t> group_ptr;     // offsets into block_start, in blocks
  std::vector<uint32_t> block_start;   // one per stored block
  std::vector<uint8_t> codes;          // block_len per stored block
  std::vector<float> codebook;         // 1..256 centroids

  uint64_t NumBlocks() const { return block_start.size(); }
  int64_t NumGroups() const {
    return axis == BlockAxis::kCols ? rows : (rows + block_len - 1) / (block_len > 0 ? block_len : 1);
  }
  size_t ResidentBytes() const {
    return group_ptr.capacity() * sizeof(uint32_t) + block_start.capacity() * sizeof(uint32_t) +
           codes.capacity() + codebook.capacity() * sizeof(float);
  }
};

// Decodes a block-layout blob into the block in-memory form (exactly as stored: an in-block zero keeps its
// code, positions past the matrix edge hold code 0). A blob without a block layout is refused; the other
// decoders take any blob, block layouts included.
Status DecodeBlockSparse(const uint8_t* data, size_t size, BlockSparseMatrix* out);
// Same for a blob already opened: no second parse or CRC pass.
Status DecodeBlockSparse(const ParsedBlob& blob, BlockSparseMatrix* out);

// Decodes into the sparse in-memory form (re-encoding gaps with 255-step fillers per row). For a block
// layout only the nonzero weights of the stored blocks become entries.
Status DecodeSparse(const uint8_t* data, size_t size, SparseMatrix* out);
// Same for a blob already opened: no second parse or CRC pass.
Status DecodeSparse(const ParsedBlob& blob, SparseMatrix* out);

// Decodes the two symbol streams exactly as stored: `delta` gets num_entries relative indices
// (0 = filler of 2^index_bits - 1 columns; empty in dense layout), `code` the codebook indices
// (num_nonzeros of them in sparse layout, num_nonzeros * block_len in block layout, num_elements in dense
// layout). For analysis and benchmarks.
Status DecodeStreams(const uint8_t* data, size_t size, std::vector<uint8_t>* delta, std::vector<uint8_t>* code);
// Same into caller buffers, which must have exactly those lengths (no allocation, no zero fill).
Status DecodeStreamsInto(const uint8_t* data, size_t size, uint8_t* delta, size_t delta_len, uint8_t* code,
                         size_t code_len);

// The IEEE 754 half-precision value of `bits` (little-endian binary16 as read from a file) as float32: exact
// for every value, subnormals, infinities and NaN included. Fp16 codebooks and the delegate's fp16 biases.
float HalfToFloat(uint16_t bits);

// CRC-32 (IEEE 802.3 / zlib polynomial), as stored in the container.
uint32_t Crc32(const uint8_t* data, size_t size, uint32_t crc = 0);

}  // namespace codec
}  // namespace dc

#endif  // DC_KERAS_OPS_CODEC_DC_CODEC_H_
