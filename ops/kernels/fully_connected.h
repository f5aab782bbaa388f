// DcFullyConnected: y = act(x W^T + b) with W kept in dc::codec::SparseMatrix form (about P+Q bytes).
//
// The math is exposed here (not only through the kernel registry) so that the kernel's own test can
// check it against a dense reference without a TFLite runtime.
#ifndef DC_KERNELS_FULLY_CONNECTED_H_
#define DC_KERNELS_FULLY_CONNECTED_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "dc_codec.h"
#include "kernels/base.h"
#include "kernels/block_fully_connected.h"
#include "kernels/weights.h"

namespace dc::kernels {

class RowSplitter;

// y[b, r] = act(bias[r] + sum_c W[r, c] x[b, c]) for b < batch. x: batch x w.cols, y: batch x w.rows,
// bias may be null. `scratch` must hold w.cols * min(batch, 8) floats (batch > 1 transposes x into it);
// pool splits the rows over threads and may be null (single thread). W must have passed ValidateSparseMatrix.
void SparseFullyConnected(const codec::SparseMatrix& w, const float* bias, const float* x, int64_t batch,
                          float* y, Activation act, float* scratch, RowSplitter* pool);

// Same contract with W dense (rows x cols, C order): the `mode=dense` fallback.
void DenseFullyConnected(const float* w, int64_t rows, int64_t cols, const float* bias, const float* x,
                         int64_t batch, float* y, Activation act, RowSplitter* pool);

// Scalar reference of SparseFullyConnected (no SIMD, no threads): the kernel test compares against it
// and against a dense product.
void SparseFullyConnectedReference(const codec::SparseMatrix& w, const float* bias, const float* x,
                                   int64_t batch, float* y, Activation act);

// Number of batch rows the batched sparse loop handles per pass (scratch size factor).
constexpr int kSparseBatchBlock = 8;

// Entries per chunk of a ChunkedMatrix.
constexpr int kChunkSize = 4;

// The form DcFullyConnected computes on, built once at Prepare from the decoded SparseMatrix: every row's
// nonzeros grouped by codebook index, each group padded to a multiple of kChunkSize entries with column
// `cols` (a zero slot the kernel appends to x). The inner loop then runs over fixed-size chunks with one
// centroid multiply per chunk and no data-dependent branch: it measured 1.5x faster at batch 1 than the
// delta/code walk (whose centroid load per entry doubles the loads), for 2.5 instead of 2 bytes per
// nonzero on a 90%-sparse 5-bit layer.
struct ChunkedMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<uint32_t> row_ptr;  // rows + 1 offsets, in chunks
  std::vector<uint16_t> col;      // kChunkSize absolute columns per chunk; == cols for padding
  std::vector<uint8_t> code;      // one codebook index per chunk
  std::vector<float> codebook;
  uint64_t nonzeros = 0;          // real entries (col.size() minus padding)
  size_t ResidentBytes() const;
  // True when the padding stays within kMaxChunkPadding (and there is something to compute).
  bool Pays() const;
};

// Largest padded-entries / nonzeros ratio for which the kernel uses the chunked form: short rows spread over
// many codebook entries would be mostly padding (LeNet's 784-input layer at 8% density has ~63 nonzeros
// over 64 centroids per row), and there the delta/code walk is faster.
constexpr double kMaxChunkPadding = 1.25;

// The form for matrices whose rows are too short for chunks (LeNet-sized layers): each row's nonzeros taken
// two at a time, one 32-bit word per pair holding both columns and the pair's index into a table of
// centroid pairs (codebook_size^2 entries of two floats, a few KB). One 8-byte table load then gives both
// weights, so a pair costs two x loads and one weight load where the delta/code walk spends two centroid
// loads and two byte loads more: 1.5x faster on a 784x300 8%-dense layer at batch 1. Odd rows end with a
// padding entry that reads the zero slot appended to x.
//
// Word layout, low bits first: pair code (2 * code_bits), col_a (col_bits), col_b (the rest). The pair code
// then needs one AND, col_a one BEXTR and col_b one shift: with BMI that is three integer ops per pair, and
// the loop measured 26% faster than with the columns in the low bits (two shift+mask pairs plus a shift).
struct PairMatrix {
  int64_t rows = 0, cols = 0;
  int col_bits = 0, code_bits = 0;
  std::vector<uint32_t> row_ptr;      // rows + 1 offsets, in pairs
  std::vector<uint32_t> pair;         // pair_code | col_a << col_a_shift() | col_b << col_b_shift()
  std::vector<float> pair_weights;    // 2 floats per (code_a, code_b): (codebook[code_a], codebook[code_b])
  uint64_t nonzeros = 0;
  size_t ResidentBytes() const;
  unsigned col_a_shift() const { return 2 * static_cast<unsigned>(code_bits); }
  unsigned col_b_shift() const { return col_a_shift() + static_cast<unsigned>(col_bits); }
  uint32_t pair_code_mask() const { return (1u << col_a_shift()) - 1; }
  uint32_t col_mask() const { return (1u << col_bits) - 1; }
};

// Largest codebook the pair form takes: its table then holds 32 x 32 pairs (8 KB), which stays in L1.
constexpr size_t kMaxPairCodebook = 32;

// True when a matrix's pairs fit the 32-bit pair words (two column indices up to `cols`, the zero slot,
// plus two codebook indices) and its pair table stays small (codebook of at most 32 entries).
bool PairFormFits(const codec::SparseMatrix& w);

// Builds the pair form of a matrix that passed ValidateSparseMatrix and PairFormFits.
Status BuildPairMatrix(const codec::SparseMatrix& w, PairMatrix* out);

// Floats of scratch PairFullyConnected needs for a batch (x plus its zero slot, transposed when batch > 1).
size_t PairScratchFloats(int64_t cols, int64_t batch);

// Same contract as SparseFullyConnected, on the pair form; scratch holds PairScratchFloats floats.
void PairFullyConnected(const PairMatrix& w, const float* bias, const float* x, int64_t batch, float* y,
                        Activation act, float* scratch, RowSplitter* pool);

// Builds the chunked form of a matrix that passed ValidateSparseMatrix (any padding; columns < 65535).
Status BuildChunkedMatrix(const codec::SparseMatrix& w, ChunkedMatrix* out);

// Floats of scratch ChunkedFullyConnected needs for a batch.
size_t ChunkedScratchFloats(int64_t cols, int64_t batch);

// Same contract as SparseFullyConnected, on the chunked form; scratch holds ChunkedScratchFloats floats.
void ChunkedFullyConnected(const ChunkedMatrix& w, const float* bias, const float* x, int64_t batch, float* y,
                           Activation act, float* scratch, RowSplitter* pool);

// A fully-connected layer's weights in the form its kernel computes on, chosen once from the decoded matrix:
// chunked for long rows (when its padding stays within kMaxChunkPadding), pairs for short rows, the
// delta/code walk for what neither takes. The delegate's DcFullyConnected and the TensorFlow op
// DcSparseMatMul both hold one of these, so both run the same loops.
class FullyConnectedWeights {
 public:
  // Validates `w` (ValidateSparseMatrix) and builds the form; an error names what is wrong with `w`.
  Status Init(codec::SparseMatrix w);
  // Same for block-sparse weights (ValidateBlockSparseMatrix): the block loops.
  Status Init(codec::BlockSparseMatrix w);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  uint64_t nonzeros() const { return nonzeros_; }
  // "chunked", "pair", "walk" or "block": which loops Run uses (for reports and tests).
  const char* form_name() const;
  // Floats of scratch Run needs for `batch` input rows.
  size_t ScratchFloats(int64_t batch) const;
  // Same contract as SparseFullyConnected.
  void Run(const float* bias, const float* x, int64_t batch, float* y, Activation act, float* scratch,
           RowSplitter* pool) const;
  size_t ResidentBytes() const;

 private:
  enum class Form { kWalk, kChunked, kPair, kBlock };
  Form form_ = Form::kWalk;
  int64_t rows_ = 0, cols_ = 0;
  uint64_t nonzeros_ = 0;
  codec::SparseMatrix walk_;
  ChunkedMatrix chunked_;
  PairMatrix pairs_;
  BlockFullyConnectedWeights block_;
};

// True when this process runs the x86-64 AVX2+FMA+BMI2 clones of the FC loops (CPU has them and
// simd::AvxClonesAllowed); false on other targets and on x86-64 CPUs without them.
bool FullyConnectedUsesAvx2();

}  // namespace dc::kernels

#endif  // DC_KERNELS_FULLY_CONNECTED_H_
