// Row lookups of DcGather (see kernels/gather.h).
#include <algorithm>
#include <cstring>

#include "kernels/gather.h"

namespace dc::delegate {
namespace {

template <typename Index>
int64_t SparseGatherImpl(const codec::SparseMatrix& w, const Index* indices, int64_t count, float* y) {
  int64_t bad = 0;
  for (int64_t i = 0; i < count; ++i) {
    float* out = y + i * w.cols;
    const int64_t r = static_cast<int64_t>(indices[i]);
    if (r < 0 || r >= w.rows) {
      std::fill(out, out + w.cols, 0.f);
      ++bad;
      continue;
    }
    w.ExpandRow(r, out);  // decodes only this row's entries (row_ptr gives its start)
  }
  return bad;
}

template <typename Index>
int64_t DenseGatherImpl(const float* table, int64_t rows, int64_t cols, const Index* indices, int64_t count,
                        float* y) {
  int64_t bad = 0;
  for (int64_t i = 0; i < count; ++i) {
    float* out = y + i * cols;
    const int64_t r = static_cast<int64_t>(indices[i]);
    if (r < 0 || r >= rows) {
      std::fill(out, out + cols, 0.f);
      ++bad;
      continue;
    }
    std::memcpy(out, table + r * cols, sizeof(float) * static_cast<size_t>(cols));
  }
  return bad;
}

}  // namespace

int64_t SparseGather(const codec::SparseMatrix& w, const int32_t* indices, int64_t count, float* y) {
  return SparseGatherImpl(w, indices, count, y);
}
int64_t SparseGather(const codec::SparseMatrix& w, const int64_t* indices, int64_t count, float* y) {
  return SparseGatherImpl(w, indices, count, y);
}
int64_t DenseGather(const float* table, int64_t rows, int64_t cols, const int32_t* indices, int64_t count, float* y) {
  return DenseGatherImpl(table, rows, cols, indices, count, y);
}
int64_t DenseGather(const float* table, int64_t rows, int64_t cols, const int64_t* indices, int64_t count, float* y) {
  return DenseGatherImpl(table, rows, cols, indices, count, y);
}

}  // namespace dc::delegate
