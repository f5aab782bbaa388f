// Helpers of the delegate's kernel tests (FC, conv, depthwise, gather): random pruned + weight-shared
// matrices in both the dense and the dc::codec::SparseMatrix form, a failure counter, and closeness checks
// against a double reference.
#ifndef DC_DELEGATE_TESTS_KERNEL_TEST_UTIL_H_
#define DC_DELEGATE_TESTS_KERNEL_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "dc_codec.h"
#include "kernels/base.h"

namespace dc_test {

// The fused activation in double precision: the reference the kernels' float results are checked against.
inline double ActivateReference(double v, dc::kernels::Activation act) {
  using dc::kernels::Activation;
  switch (act) {
    case Activation::kNone: return v;
    case Activation::kRelu: return v < 0 ? 0 : v;
    case Activation::kReluN1To1: return std::fmin(1.0, std::fmax(-1.0, v));
    case Activation::kRelu6: return std::fmin(6.0, std::fmax(0.0, v));
    case Activation::kTanh: return std::tanh(v);
  }
  return v;
}

inline int& Failures() {
  static int failures = 0;
  return failures;
}

#define CHECK(cond, ...)                                         \
  do {                                                           \
    if (!(cond)) {                                               \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);  \
      std::fprintf(stderr, __VA_ARGS__);                         \
      std::fprintf(stderr, "\n");                                \
      ++dc_test::Failures();                                     \
    }                                                            \
  } while (0)

// A rows x cols matrix with about `density` nonzeros drawn from a `codebook_size`-entry codebook, dense and
// sparse. Rows listed in `empty_every` (r % empty_every == empty_every - 1) stay empty so that empty rows are
// covered; long_gaps leaves 300-column holes so that fillers appear.
struct SharedMatrix {
  dc::codec::SparseMatrix sparse;
  std::vector<float> dense;
};

inline SharedMatrix RandomShared(int rows, int cols, double density, int codebook_size, bool long_gaps,
                                 std::mt19937& rng, int empty_every = 0) {
  SharedMatrix m;
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  m.sparse.rows = rows;
  m.sparse.cols = cols;
  for (int k = 0; k < codebook_size; ++k) m.sparse.codebook.push_back(uni(rng) + (k % 2 ? 0.01f : -0.01f));
  m.dense.assign(static_cast<size_t>(rows) * cols, 0.f);
  m.sparse.row_ptr.push_back(0);
  for (int r = 0; r < rows; ++r) {
    const bool empty = empty_every > 0 && r % empty_every == empty_every - 1;
    int last = -1;
    for (int c = 0; c < cols && !empty; ++c) {
      if (long_gaps && (c / 300) % 2 == 1) continue;
      if (coin(rng) >= density) continue;
      int gap = c - last;
      while (gap > 255) {
        m.sparse.delta.push_back(0);
        m.sparse.code.push_back(0);
        gap -= 255;
      }
      const int code = static_cast<int>(rng() % codebook_size);
      m.sparse.delta.push_back(static_cast<uint8_t>(gap));
      m.sparse.code.push_back(static_cast<uint8_t>(code));
      m.dense[static_cast<size_t>(r) * cols + c] = m.sparse.codebook[code];
      last = c;
    }
    m.sparse.row_ptr.push_back(static_cast<uint32_t>(m.sparse.delta.size()));
  }
  return m;
}

inline std::vector<float> RandomVector(size_t n, std::mt19937& rng, float stddev = 1.f) {
  std::normal_distribution<float> normal(0.f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// max |got - want| <= tol * (max |want| + 1e-3); reports the first mismatch under `what`.
inline bool AllClose(const std::vector<float>& got, const std::vector<float>& want, double tol, const char* what) {
  if (got.size() != want.size()) {
    CHECK(false, "%s: size %zu != %zu", what, got.size(), want.size());
    return false;
  }
  double scale = 1e-3;
  for (float w : want) scale = std::max(scale, static_cast<double>(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= tol * scale)) {
      CHECK(false, "%s: element %zu got %.8g want %.8g", what, i, got[i], want[i]);
      return false;
    }
  return true;
}

}  // namespace dc_test

#endif  // DC_DELEGATE_TESTS_KERNEL_TEST_UTIL_H_
