// Helpers of the delegate's kernel tests (FC, conv, depthwise, gather): random pruned + weight-shared
// matrices in both the dense and the dc::codec::SparseMatrix (or BlockSparseMatrix) form, the switch between
// block paths, a failure counter, and closeness checks against a double reference.
#ifndef DC_DELEGATE_TESTS_KERNEL_TEST_UTIL_H_
#define DC_DELEGATE_TESTS_KERNEL_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "dc_codec.h"
#include "kernels/base.h"
#include "kernels/block_fully_connected.h"
#include "kernels/cpu_dispatch.h"

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

// Block-sparse weights in both forms (block FC and block conv tests).
struct BlockCase {
  dc::codec::BlockSparseMatrix w;
  std::vector<float> dense;  // rows x cols, the weights the blocks put inside the matrix
  uint64_t inside = 0;       // stored weights inside the matrix
};

// Blocks at about `density` of the aligned positions; every `empty_every`-th group has none. Positions past
// the matrix edge hold code 0, as the codec writes them.
inline BlockCase RandomBlocks(int64_t rows, int64_t cols, dc::codec::BlockAxis axis, int L, int codebook_size,
                              double density, std::mt19937& rng, int empty_every = 5) {
  BlockCase c;
  dc::codec::BlockSparseMatrix& w = c.w;
  w.rows = rows;
  w.cols = cols;
  w.axis = axis;
  w.block_len = L;
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  for (int k = 0; k < codebook_size; ++k) w.codebook.push_back(uni(rng));
  c.dense.assign(static_cast<size_t>(rows * cols), 0.f);
  const int64_t groups = w.NumGroups(), step = axis == dc::codec::BlockAxis::kCols ? L : 1;
  w.group_ptr.push_back(0);
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t start = 0; start < cols && g % empty_every != empty_every - 1; start += step) {
      if (coin(rng) >= density) continue;
      w.block_start.push_back(static_cast<uint32_t>(start));
      for (int i = 0; i < L; ++i) {
        const int64_t r = axis == dc::codec::BlockAxis::kCols ? g : g * L + i;
        const int64_t col = axis == dc::codec::BlockAxis::kCols ? start + i : start;
        const bool inside = r < rows && col < cols;
        const uint8_t code = inside ? static_cast<uint8_t>(rng() % codebook_size) : 0;
        w.codes.push_back(code);
        if (inside) {
          c.dense[static_cast<size_t>(r * cols + col)] = w.codebook[code];
          ++c.inside;
        }
      }
    }
    w.group_ptr.push_back(static_cast<uint32_t>(w.block_start.size()));
  }
  return c;
}

// Switches the process to `path` through the test hooks; false when this CPU or build cannot run it.
inline bool ForcePath(const std::string& path) {
  dc::kernels::simd::PortableOnly() = path == "portable";
  dc::kernels::simd::Avx512Disabled() = path == "avx2";
  return path == dc::kernels::BlockFullyConnectedPathName();
}

}  // namespace dc_test

#endif  // DC_DELEGATE_TESTS_KERNEL_TEST_UTIL_H_
