// Embedding lookup / TFLite's GATHER(params, indices) with axis 0, params being a constant [vocab, dim] table:
// the delegate's DcGather and the TensorFlow op DcEmbeddingLookup both run these. From the sparse form only
// the rows asked for are expanded, straight into the output, so the table never exists as floats.
#ifndef DC_KERNELS_GATHER_H_
#define DC_KERNELS_GATHER_H_

#include <cstdint>

#include "dc_codec.h"
#include "kernels/base.h"

namespace dc::kernels {

// Ok when every index lies in [0, rows); else an error naming the first bad index, its flat position and the
// range. Negative indices are errors too, as in stock TFLite's GATHER (Keras wraps nothing at this level).
Status CheckGatherIndices(const int32_t* indices, int64_t count, int64_t rows);
Status CheckGatherIndices(const int64_t* indices, int64_t count, int64_t rows);

// y[i - first, :] = table[indices[i], :] for i in [first, last) (y has w.cols floats per row). Unchecked:
// the indices must have passed CheckGatherIndices and w ValidateSparseMatrix; for splitting over threads.
void GatherRows(const codec::SparseMatrix& w, const int32_t* indices, int64_t first, int64_t last, float* y);
void GatherRows(const codec::SparseMatrix& w, const int64_t* indices, int64_t first, int64_t last, float* y);

// CheckGatherIndices, then all rows: y is count x w.cols. Writes nothing when an index is out of range.
Status SparseGather(const codec::SparseMatrix& w, const int32_t* indices, int64_t count, float* y);
Status SparseGather(const codec::SparseMatrix& w, const int64_t* indices, int64_t count, float* y);

// Same from a dense float32 table [rows, cols] (the delegate's mode=dense).
Status DenseGather(const float* table, int64_t rows, int64_t cols, const int32_t* indices, int64_t count, float* y);
Status DenseGather(const float* table, int64_t rows, int64_t cols, const int64_t* indices, int64_t count, float* y);

}  // namespace dc::kernels

#endif  // DC_KERNELS_GATHER_H_
