// Fully-connected math on block-sparse weights (codec::BlockSparseMatrix): whole aligned blocks of
// block_len weights, each weight with its own codebook index. Blocks that match the SIMD width let a kernel
// load x contiguously (kCols) or write y contiguously (kRows) and look the codes up in a codebook held in
// registers, which an unstructured sparse walk cannot do.
#ifndef DC_KERNELS_BLOCK_FULLY_CONNECTED_H_
#define DC_KERNELS_BLOCK_FULLY_CONNECTED_H_

#include <cstdint>

#include "dc_codec.h"
#include "kernels/base.h"
#include "kernels/block_fc_plan.h"

namespace dc::kernels {

class RowSplitter;

// Checks what the block loops rely on: axis and block_len valid (4, 8 or 16), group_ptr monotone with
// NumGroups() + 1 entries ending at NumBlocks(), block starts increasing within a group and inside the
// matrix (kCols: multiples of block_len below cols; kRows: below cols), codes.size() == NumBlocks() *
// block_len, every code inside a codebook of 1..256 entries (or none when there are no blocks).
Status ValidateBlockSparseMatrix(const codec::BlockSparseMatrix& w);

// Scalar reference: y[b, r] = act(bias[r] + sum_c W[r, c] x[b, c]) for b < batch; x: batch x cols, y:
// batch x rows, bias may be null. W must have passed ValidateBlockSparseMatrix. Tests compare the fast
// paths against it.
void BlockFullyConnectedReference(const codec::BlockSparseMatrix& w, const float* bias, const float* x,
                                  int64_t batch, float* y, Activation act);

// Which block-sparse FC loops this process runs now: "avx512" (x86-64 AVX-512 F/BW/DQ/VL, unless
// DC_KERAS_DISABLE_AVX512 or DC_KERAS_DISABLE_AVX2 is set), "avx2" (AVX2+FMA), "neon" (AArch64) or "portable".
const char* BlockFullyConnectedPathName();

// A block-sparse FC layer's weights in the form its loops run on, built once (Prepare / first use). The
// delegate's DcFullyConnected and the TensorFlow op DcSparseMatMul hold one through FullyConnectedWeights.
class BlockFullyConnectedWeights {
 public:
  // Validates `w` and builds the form; an error names what is wrong with `w`.
  Status Init(codec::BlockSparseMatrix w);

  int64_t rows() const { return plan_.rows; }
  int64_t cols() const { return plan_.cols; }
  // Weights of the stored blocks that lie inside the matrix.
  uint64_t stored_weights() const { return stored_weights_; }
  // Which loops Run takes on this CPU now: "avx512", "avx2", "neon" or "portable".
  const char* path_name() const;
  // Floats of scratch Run needs for `batch` input rows.
  size_t ScratchFloats(int64_t batch) const;
  // y = act(x W^T + bias) as BlockFullyConnectedReference; pool splits the work and may be null.
  void Run(const float* bias, const float* x, int64_t batch, float* y, Activation act, float* scratch,
           RowSplitter* pool) const;
  // Floats per input row RunPaddedRows reads: cols(), then zeros (which the padding blocks and the blocks
  // reaching past the last column read); a multiple of 16.
  int64_t padded_cols() const { return plan_.x_len; }
  // Run's math on rows the caller has already laid out for the loops (row b at x + b * padded_cols(), its
  // floats from cols() on zero; 64-byte aligned rows load fastest), on the calling thread. For callers that
  // build the rows themselves, such as the block convolution's im2col, which saves Run's copy.
  void RunPaddedRows(const float* bias, const float* x, int64_t batch, float* y, Activation act) const;
  size_t ResidentBytes() const;

 private:
  block::BlockPlan plan_;  // the only copy of the weights kept after Init
  uint64_t stored_weights_ = 0;
};

}  // namespace dc::kernels

#endif  // DC_KERNELS_BLOCK_FULLY_CONNECTED_H_
