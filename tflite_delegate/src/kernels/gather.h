// DcGather: TFLite's GATHER(params, indices) with axis 0 (what an embedding lookup converts to), params being
// a constant [vocab, dim] table kept as a dc::codec::SparseMatrix (rows = vocab, cols = dim). Only the rows an
// invocation asks for are decoded, straight into the output, so the table never exists as floats.
#ifndef DC_DELEGATE_KERNELS_GATHER_H_
#define DC_DELEGATE_KERNELS_GATHER_H_

#include <cstdint>

#include "dc_codec.h"

namespace dc::delegate {

// y[i, :] = table[indices[i], :] for i < count (y is count x w.cols). An index outside [0, w.rows) gives a
// row of zeros: a kernel cannot fail at run time, and zeros are what TensorFlow's own GPU kernel returns
// (Keras's embedding wraps negative indices before the GATHER, so only indices >= vocab or < -vocab get here).
// Returns the number of out-of-range indices. w must have passed ValidateSparseMatrix.
int64_t SparseGather(const codec::SparseMatrix& w, const int32_t* indices, int64_t count, float* y);
int64_t SparseGather(const codec::SparseMatrix& w, const int64_t* indices, int64_t count, float* y);

// Same from a dense float32 table [rows, cols] (the delegate's mode=dense).
int64_t DenseGather(const float* table, int64_t rows, int64_t cols, const int32_t* indices, int64_t count, float* y);
int64_t DenseGather(const float* table, int64_t rows, int64_t cols, const int64_t* indices, int64_t count, float* y);

}  // namespace dc::delegate

#endif  // DC_DELEGATE_KERNELS_GATHER_H_
