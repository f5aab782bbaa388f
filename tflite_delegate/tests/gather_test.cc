// Test of the DcGather math (kernels/gather_math.cc): rows decoded from the sparse table (empty rows, rows
// that need fillers, repeated indices) and from the dense fallback equal the dense table's rows, int32 and
// int64 indices, and out-of-range indices give zero rows and are counted.
// Built with -fsanitize=address,undefined by tests/test_kernels_conv.py; exits nonzero on failure.
#include <cstdio>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/fully_connected.h"
#include "kernels/gather.h"

using namespace dc::delegate;

namespace {

template <typename Index>
void RunCase(int vocab, int dim, double density, int codebook, bool long_gaps, std::mt19937& rng) {
  dc_test::SharedMatrix w = dc_test::RandomShared(vocab, dim, density, codebook, long_gaps, rng, 3);
  CHECK(ValidateSparseMatrix(w.sparse).ok(), "valid matrix rejected");
  std::vector<Index> idx;
  for (int i = 0; i < 3 * vocab; ++i) idx.push_back(static_cast<Index>(rng() % vocab));
  idx.push_back(0);
  idx.push_back(static_cast<Index>(vocab - 1));
  idx.push_back(static_cast<Index>(vocab));  // out of range
  idx.push_back(static_cast<Index>(-1));     // out of range
  const int64_t n = static_cast<int64_t>(idx.size());
  std::vector<float> want(static_cast<size_t>(n) * dim, 0.f);
  for (int64_t i = 0; i < n; ++i)
    if (idx[i] >= 0 && idx[i] < vocab)
      for (int c = 0; c < dim; ++c) want[i * dim + c] = w.dense[static_cast<size_t>(idx[i]) * dim + c];
  std::vector<float> got(want.size(), -777.f), got_dense(want.size(), -777.f);
  const int64_t bad = SparseGather(w.sparse, idx.data(), n, got.data());
  const int64_t bad_dense = DenseGather(w.dense.data(), vocab, dim, idx.data(), n, got_dense.data());
  CHECK(bad == 2 && bad_dense == 2, "out-of-range count %lld / %lld, want 2", static_cast<long long>(bad),
        static_cast<long long>(bad_dense));
  CHECK(got == want, "sparse gather differs (vocab %d dim %d)", vocab, dim);
  CHECK(got_dense == want, "dense gather differs (vocab %d dim %d)", vocab, dim);
}

}  // namespace

int main() {
  std::mt19937 rng(17);
  RunCase<int32_t>(100, 8, 0.5, 16, false, rng);
  RunCase<int64_t>(100, 8, 0.5, 16, false, rng);
  RunCase<int32_t>(37, 1000, 0.1, 32, true, rng);  // long rows with fillers
  RunCase<int64_t>(5, 3, 1.0, 2, false, rng);
  RunCase<int32_t>(7, 16, 0.0, 1, false, rng);     // all pruned
  if (dc_test::Failures()) {
    std::fprintf(stderr, "%d failure(s)\n", dc_test::Failures());
    return 1;
  }
  std::printf("gather_test: OK\n");
  return 0;
}
