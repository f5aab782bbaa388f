// Test of the DcFullyConnected math (kernels/fully_connected_math.cc) against a dense double-precision
// reference: every in-memory form (delta/code walk, chunked, pairs) and the choice FullyConnectedWeights
// makes between them, every batch path (1, blocks of 8, ragged), every fused activation, long gaps that
// need fillers, empty rows, and threads. Also checks that invalid matrices are rejected.
// Built with -fsanitize=address,undefined by tests/test_delegate_kernels.py; exits nonzero on failure.
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/cpu_dispatch.h"
#include "kernels/fully_connected.h"
#include "thread_pool.h"

using dc::codec::SparseMatrix;
using namespace dc::kernels;
using dc::delegate::ThreadPool;

namespace {

using Case = dc_test::SharedMatrix;

// Random pruned + shared matrix; every 7th row stays empty, `long_gaps` leaves holes so fillers appear.
Case MakeCase(int rows, int cols, double density, int codebook_size, bool long_gaps, std::mt19937& rng) {
  return dc_test::RandomShared(rows, cols, density, codebook_size, long_gaps, rng, /*empty_every=*/7);
}

void CheckClose(const std::vector<float>& got, const Case& c, const std::vector<float>& x,
                const std::vector<float>& bias, int batch, Activation act, const char* what) {
  const int rows = static_cast<int>(c.sparse.rows), cols = static_cast<int>(c.sparse.cols);
  for (int b = 0; b < batch; ++b)
    for (int r = 0; r < rows; ++r) {
      double sum = bias[r], scale = std::fabs(bias[r]);
      for (int k = 0; k < cols; ++k) {
        const double p = static_cast<double>(c.dense[static_cast<size_t>(r) * cols + k]) * x[b * cols + k];
        sum += p;
        scale += std::fabs(p);
      }
      const double want = dc_test::ActivateReference(sum, act), have = got[static_cast<size_t>(b) * rows + r];
      if (std::fabs(want - have) > 1e-5 * (scale + 1e-6)) {
        CHECK(false, "%s: batch %d row %d act %d: got %.8g want %.8g", what, b, r, static_cast<int>(act), have, want);
        return;
      }
    }
}

void RunCase(int rows, int cols, double density, int k, bool long_gaps, std::mt19937& rng, ThreadPool* pool) {
  Case c = MakeCase(rows, cols, density, k, long_gaps, rng);
  Status valid = ValidateSparseMatrix(c.sparse);
  CHECK(valid.ok(), "valid matrix rejected: %s", valid.message().c_str());
  ChunkedMatrix chunked;
  Status built = BuildChunkedMatrix(c.sparse, &chunked);
  CHECK(built.ok(), "chunked form rejected: %s", built.message().c_str());
  uint64_t real_entries = 0;
  for (uint8_t d : c.sparse.delta) real_entries += d != 0;
  CHECK(chunked.nonzeros == real_entries, "chunked form counts %llu nonzeros, the matrix has %llu",
        static_cast<unsigned long long>(chunked.nonzeros), static_cast<unsigned long long>(real_entries));
  CHECK(chunked.col.size() % kChunkSize == 0 && chunked.col.size() >= real_entries, "chunk padding is inconsistent");
  CHECK(chunked.Pays() == (real_entries > 0 && chunked.col.size() <= kMaxChunkPadding * real_entries),
        "Pays() disagrees with the padding ratio");
  const bool pair_fits = PairFormFits(c.sparse);
  PairMatrix pairs;
  if (pair_fits) {
    Status pair_built = BuildPairMatrix(c.sparse, &pairs);
    CHECK(pair_built.ok(), "pair form rejected: %s", pair_built.message().c_str());
    CHECK(pairs.nonzeros == real_entries, "pair form counts %llu nonzeros, the matrix has %llu",
          static_cast<unsigned long long>(pairs.nonzeros), static_cast<unsigned long long>(real_entries));
    CHECK(pairs.pair.size() >= (real_entries + 1) / 2 && pairs.pair.size() <= real_entries / 2 + rows,
          "pair count %zu is not about half of %llu entries", pairs.pair.size(),
          static_cast<unsigned long long>(real_entries));
  }
  FullyConnectedWeights weights;
  Status weights_ok = weights.Init(c.sparse);
  CHECK(weights_ok.ok(), "FullyConnectedWeights rejected a valid matrix: %s", weights_ok.message().c_str());
  const std::string want_form = chunked.Pays() ? "chunked" : pair_fits ? "pair" : "walk";
  CHECK(want_form == weights.form_name(), "FullyConnectedWeights chose %s, expected %s", weights.form_name(),
        want_form.c_str());
  std::normal_distribution<float> normal(0.f, 2.f);
  std::vector<float> bias(rows);
  for (float& v : bias) v = normal(rng);
  for (int batch : {1, 2, 8, 11, 32}) {
    std::vector<float> x(static_cast<size_t>(batch) * cols);
    for (float& v : x) v = normal(rng);
    std::vector<float> scratch(static_cast<size_t>(cols) * kSparseBatchBlock);
    for (int a = 0; a <= 4; ++a) {
      const Activation act = static_cast<Activation>(a);
      std::vector<float> y(static_cast<size_t>(batch) * rows, -123.f);
      SparseFullyConnected(c.sparse, bias.data(), x.data(), batch, y.data(), act, scratch.data(), pool);
      CheckClose(y, c, x, bias, batch, act, "sparse");
      std::vector<float> yd(static_cast<size_t>(batch) * rows, -123.f);
      DenseFullyConnected(c.dense.data(), rows, cols, bias.data(), x.data(), batch, yd.data(), act, pool);
      CheckClose(yd, c, x, bias, batch, act, "dense");
      std::vector<float> yr(static_cast<size_t>(batch) * rows, -123.f);
      SparseFullyConnectedReference(c.sparse, bias.data(), x.data(), batch, yr.data(), act);
      CheckClose(yr, c, x, bias, batch, act, "reference");
      std::vector<float> chunk_scratch(ChunkedScratchFloats(cols, batch));
      std::vector<float> yc(static_cast<size_t>(batch) * rows, -123.f);
      ChunkedFullyConnected(chunked, bias.data(), x.data(), batch, yc.data(), act, chunk_scratch.data(), pool);
      CheckClose(yc, c, x, bias, batch, act, "chunked");
      std::vector<float> weights_scratch(weights.ScratchFloats(batch));
      std::vector<float> yw(static_cast<size_t>(batch) * rows, -123.f);
      weights.Run(bias.data(), x.data(), batch, yw.data(), act, weights_scratch.data(), pool);
      CheckClose(yw, c, x, bias, batch, act, weights.form_name());
      if (pair_fits) {
        std::vector<float> pair_scratch(PairScratchFloats(cols, batch));
        std::vector<float> yp(static_cast<size_t>(batch) * rows, -123.f);
        PairFullyConnected(pairs, bias.data(), x.data(), batch, yp.data(), act, pair_scratch.data(), pool);
        CheckClose(yp, c, x, bias, batch, act, "pair");
      }
    }
    // No bias.
    std::vector<float> y(static_cast<size_t>(batch) * rows), zeros(rows, 0.f);
    SparseFullyConnected(c.sparse, nullptr, x.data(), batch, y.data(), Activation::kNone, scratch.data(), pool);
    CheckClose(y, c, x, zeros, batch, Activation::kNone, "sparse without bias");
  }
}

void TestValidation(std::mt19937& rng) {
  Case c = MakeCase(5, 40, 0.5, 4, false, rng);
  SparseMatrix bad = c.sparse;
  bad.cols = 3;  // columns now run past the end
  CHECK(!ValidateSparseMatrix(bad).ok(), "column overflow accepted");
  bad = c.sparse;
  if (!bad.code.empty()) bad.code[0] = 4;
  CHECK(!ValidateSparseMatrix(bad).ok(), "code outside codebook accepted");
  bad = c.sparse;
  bad.row_ptr.pop_back();
  CHECK(!ValidateSparseMatrix(bad).ok(), "short row_ptr accepted");
  bad = c.sparse;
  bad.row_ptr[2] = bad.row_ptr[3] + 1;
  CHECK(!ValidateSparseMatrix(bad).ok(), "decreasing row_ptr accepted");
  bad = c.sparse;
  bad.codebook.clear();
  CHECK(!ValidateSparseMatrix(bad).ok(), "empty codebook accepted");
  bad = c.sparse;
  bad.delta.assign(bad.delta.size(), 0);  // fillers only: every row steps past 40 columns
  CHECK(!ValidateSparseMatrix(bad).ok(), "filler past the end accepted");
  FullyConnectedWeights weights;
  CHECK(!weights.Init(bad).ok(), "FullyConnectedWeights accepted an invalid matrix");
  // A fully pruned layer: no entries, no centroids; the output is the bias.
  SparseMatrix zero;
  zero.rows = 3;
  zero.cols = 5;
  zero.row_ptr = {0, 0, 0, 0};
  Status zero_ok = weights.Init(zero);
  CHECK(zero_ok.ok(), "all-zero matrix rejected: %s", zero_ok.message().c_str());
  std::vector<float> x(10, 1.f), y(6, -1.f), bias = {1.f, 2.f, 3.f}, scratch(weights.ScratchFloats(2) + 1);
  weights.Run(bias.data(), x.data(), 2, y.data(), Activation::kNone, scratch.data(), nullptr);
  CHECK(y[0] == 1.f && y[2] == 3.f && y[3] == 1.f && y[5] == 3.f, "all-zero matrix does not give the bias");
}

// Which matrices the pair form takes, and that an odd row's padding entry cannot turn an unused
// non-finite centroid into NaN.
void TestPairForm(std::mt19937& rng) {
  CHECK(PairFormFits(MakeCase(4, 784, 0.1, 32, false, rng).sparse), "784 inputs, 32 centroids should fit");
  CHECK(!PairFormFits(MakeCase(4, 300, 0.1, 33, false, rng).sparse), "33 centroids exceed the pair table");
  CHECK(!PairFormFits(MakeCase(2, 70000, 0.001, 4, false, rng).sparse), "70000 columns exceed 32-bit pair words");
  CHECK(PairFormFits(MakeCase(2, 2047, 0.05, 32, false, rng).sparse), "2047 inputs, 32 centroids fill 32 bits");
  CHECK(!PairFormFits(MakeCase(2, 2048, 0.05, 32, false, rng).sparse), "2048 inputs, 32 centroids need 34 bits");
  CHECK(PairFormFits(MakeCase(2, 32767, 0.002, 2, false, rng).sparse), "32767 inputs, 2 centroids fill 32 bits");
  SparseMatrix w;
  w.rows = 1;
  w.cols = 10;
  w.codebook = {std::numeric_limits<float>::infinity(), 0.5f};
  w.row_ptr = {0, 3};
  w.delta = {1, 2, 3};  // columns 0, 2, 5
  w.code = {1, 1, 1};
  PairMatrix pairs;
  CHECK(BuildPairMatrix(w, &pairs).ok() && pairs.pair.size() == 2, "odd row should take two pairs");
  std::vector<float> x(10, 1.f), y(1), scratch(PairScratchFloats(10, 1));
  PairFullyConnected(pairs, nullptr, x.data(), 1, y.data(), Activation::kNone, scratch.data(), nullptr);
  CHECK(y[0] == 1.5f, "odd row with an unused infinite centroid gives %g, want 1.5", y[0]);
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  ThreadPool single(1), threads(3);
#if defined(__x86_64__)
  const bool modes[] = {true, false};  // portable loops, then the AVX2 clones if the CPU has them
#else
  const bool modes[] = {false};
#endif
  for (bool portable : modes)
  for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &single, &threads}) {
    simd::PortableOnly() = portable;
    RunCase(13, 37, 0.3, 5, false, rng, pool);     // tiny, ragged: loop tails only
    RunCase(40, 300, 0.5, 8, false, rng, pool);    // long rows: chunked form
    RunCase(33, 500, 0.2, 16, false, rng, pool);   // chunked
    RunCase(64, 1000, 0.1, 32, true, rng, pool);   // short rows, fillers: pair form
    RunCase(17, 900, 0.15, 200, true, rng, pool);  // codebook too big for pairs: delta/code walk, fillers
    RunCase(9, 2000, 0.01, 3, true, rng, pool);    // very sparse: many fillers
    // Pair words filled to bit 31: 2047 columns + the zero slot take 11 bits each, 32 centroids 5 each;
    // 32767 columns take 15 bits each beside two 1-bit codes.
    RunCase(6, 2047, 0.05, 32, true, rng, pool);
    RunCase(4, 32767, 0.002, 2, true, rng, pool);
    // All-zero layer: every form's vectors are empty (null data()), so its row loops must not do pointer
    // arithmetic on them.
    RunCase(32, 64, 0.0, 8, false, rng, pool);
    RunCase(3, 600, 0.0, 4, false, rng, pool);
  }
  TestValidation(rng);
  TestPairForm(rng);
  if (dc_test::Failures()) {
    std::fprintf(stderr, "%d failure(s)\n", dc_test::Failures());
    return 1;
  }
  std::printf("fully_connected_test: OK\n");
  return 0;
}
