// Test of the DcGather math (kernels/gather_math.cc): rows decoded from the sparse table (empty rows, rows
// that need fillers, repeated indices) and from the dense fallback equal the dense table's rows, int32 and
// int64 indices; an index outside [0, vocab), negative or too large, is an error naming it and the range,
// and the output is left untouched.
// Built with -fsanitize=address,undefined by tests/test_kernels_conv.py; exits nonzero on failure.
#include <cstdio>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/fully_connected.h"
#include "kernels/gather.h"

using namespace dc::kernels;

namespace {

template <typename Index>
void RunCase(int vocab, int dim, double density, int codebook, bool long_gaps, std::mt19937& rng) {
  dc_test::SharedMatrix w = dc_test::RandomShared(vocab, dim, density, codebook, long_gaps, rng, 3);
  CHECK(ValidateSparseMatrix(w.sparse).ok(), "valid matrix rejected");
  std::vector<Index> idx;
  for (int i = 0; i < 3 * vocab; ++i) idx.push_back(static_cast<Index>(rng() % vocab));
  idx.push_back(0);
  idx.push_back(static_cast<Index>(vocab - 1));
  const int64_t n = static_cast<int64_t>(idx.size());
  std::vector<float> want(static_cast<size_t>(n) * dim, 0.f);
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < dim; ++c) want[i * dim + c] = w.dense[static_cast<size_t>(idx[i]) * dim + c];
  std::vector<float> got(want.size(), -777.f), got_dense(want.size(), -777.f);
  CHECK(SparseGather(w.sparse, idx.data(), n, got.data()).ok(), "in-range sparse gather failed");
  CHECK(DenseGather(w.dense.data(), vocab, dim, idx.data(), n, got_dense.data()).ok(), "in-range dense gather failed");
  CHECK(got == want, "sparse gather differs (vocab %d dim %d)", vocab, dim);
  CHECK(got_dense == want, "dense gather differs (vocab %d dim %d)", vocab, dim);

  for (const Index bad : {static_cast<Index>(vocab), static_cast<Index>(-1), static_cast<Index>(-vocab - 1)}) {
    std::vector<Index> ids = {0, bad};
    std::vector<float> out(2 * static_cast<size_t>(dim), -777.f), out_dense(out);
    const Status sparse_st = SparseGather(w.sparse, ids.data(), 2, out.data());
    const Status dense_st = DenseGather(w.dense.data(), vocab, dim, ids.data(), 2, out_dense.data());
    const std::string expect = "id " + std::to_string(static_cast<long long>(bad)) + " at flat position 1 is out of range [0, " +
                               std::to_string(vocab) + ")";
    CHECK(!sparse_st.ok() && sparse_st.message().find(expect) == 0, "sparse gather of id %lld: '%s'",
          static_cast<long long>(bad), sparse_st.message().c_str());
    CHECK(!dense_st.ok() && dense_st.message().find(expect) == 0, "dense gather of id %lld: '%s'",
          static_cast<long long>(bad), dense_st.message().c_str());
    CHECK(out[0] == -777.f && out_dense[0] == -777.f, "a failed gather wrote output");
  }
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
