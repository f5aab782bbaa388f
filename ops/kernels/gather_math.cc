// Row lookups of an embedding table (see kernels/gather.h).
#include <cstring>
#include <string>

#include "kernels/gather.h"

namespace dc::kernels {
namespace {

template <typename Index>
Status CheckIndicesImpl(const Index* indices, int64_t count, int64_t rows) {
  for (int64_t i = 0; i < count; ++i) {
    const int64_t id = static_cast<int64_t>(indices[i]);
    if (id < 0 || id >= rows)
      return Status::Error("id " + std::to_string(id) + " at flat position " + std::to_string(i) +
                           " is out of range [0, " + std::to_string(rows) + ") for a table of " +
                           std::to_string(rows) + " rows");
  }
  return Status();
}

template <typename Index>
void GatherRowsImpl(const codec::SparseMatrix& w, const Index* indices, int64_t first, int64_t last, float* y) {
  for (int64_t i = first; i < last; ++i) w.ExpandRow(static_cast<int64_t>(indices[i]), y + (i - first) * w.cols);
}

template <typename Index>
Status SparseGatherImpl(const codec::SparseMatrix& w, const Index* indices, int64_t count, float* y) {
  Status st = CheckIndicesImpl(indices, count, w.rows);
  if (st.ok()) GatherRowsImpl(w, indices, 0, count, y);
  return st;
}

template <typename Index>
Status DenseGatherImpl(const float* table, int64_t rows, int64_t cols, const Index* indices, int64_t count, float* y) {
  Status st = CheckIndicesImpl(indices, count, rows);
  if (!st.ok()) return st;
  for (int64_t i = 0; i < count; ++i)
    std::memcpy(y + i * cols, table + static_cast<int64_t>(indices[i]) * cols,
                sizeof(float) * static_cast<size_t>(cols));
  return st;
}

}  // namespace

Status CheckGatherIndices(const int32_t* indices, int64_t count, int64_t rows) {
  return CheckIndicesImpl(indices, count, rows);
}
Status CheckGatherIndices(const int64_t* indices, int64_t count, int64_t rows) {
  return CheckIndicesImpl(indices, count, rows);
}
void GatherRows(const codec::SparseMatrix& w, const int32_t* indices, int64_t first, int64_t last, float* y) {
  GatherRowsImpl(w, indices, first, last, y);
}
void GatherRows(const codec::SparseMatrix& w, const int64_t* indices, int64_t first, int64_t last, float* y) {
  GatherRowsImpl(w, indices, first, last, y);
}
Status SparseGather(const codec::SparseMatrix& w, const int32_t* indices, int64_t count, float* y) {
  return SparseGatherImpl(w, indices, count, y);
}
Status SparseGather(const codec::SparseMatrix& w, const int64_t* indices, int64_t count, float* y) {
  return SparseGatherImpl(w, indices, count, y);
}
Status DenseGather(const float* table, int64_t rows, int64_t cols, const int32_t* indices, int64_t count, float* y) {
  return DenseGatherImpl(table, rows, cols, indices, count, y);
}
Status DenseGather(const float* table, int64_t rows, int64_t cols, const int64_t* indices, int64_t count, float* y) {
  return DenseGatherImpl(table, rows, cols, indices, count, y);
}

}  // namespace dc::kernels
