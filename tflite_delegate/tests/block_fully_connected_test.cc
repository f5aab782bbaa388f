// Test of the block-sparse FC math (kernels/block_fully_connected.h and the per-path loops block_fc_*.cc)
// against BlockFullyConnectedReference and a dense double-precision product: every path this CPU can run
// (portable, AVX2, AVX-512 on x86-64; portable and NEON on AArch64), both block axes, block lengths 4, 8
// and 16, codebooks from 1 to 256 entries (each lookup kind: one or two registers, blends, gathers, byte
// planes), matrices whose sides are not multiples of the block length (edge blocks), empty rows and bands,
// empty matrices, batches 1, 3 and 9, every fused activation, with and without threads. Also checks that
// invalid block matrices are rejected. Built with -fsanitize=address,undefined by tests; exits nonzero on
// failure and prints the paths it covered.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/block_fully_connected.h"
#include "kernels/cpu_dispatch.h"
#include "kernels/fully_connected.h"
#include "thread_pool.h"

using dc::codec::BlockAxis;
using dc::codec::BlockSparseMatrix;
using namespace dc::kernels;
using dc::delegate::ThreadPool;

namespace {

using dc_test::BlockCase;
using dc_test::ForcePath;
using dc_test::RandomBlocks;

// got against the dense double product (tolerance relative to the sum of |terms|, per output).
void CheckDense(const std::vector<float>& got, const BlockCase& c, const std::vector<float>& x,
                const float* bias, int64_t batch, Activation act, const std::string& what) {
  const int64_t rows = c.w.rows, cols = c.w.cols;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < rows; ++r) {
      double sum = bias ? bias[r] : 0.0, scale = std::fabs(sum);
      for (int64_t k = 0; k < cols; ++k) {
        const double p = static_cast<double>(c.dense[static_cast<size_t>(r * cols + k)]) * x[b * cols + k];
        sum += p;
        scale += std::fabs(p);
      }
      const double want = dc_test::ActivateReference(sum, act), have = got[static_cast<size_t>(b * rows + r)];
      if (!(std::fabs(want - have) <= 1e-5 * (scale + 1e-6))) {
        CHECK(false, "%s: batch %lld row %lld act %d: got %.8g want %.8g", what.c_str(),
              static_cast<long long>(b), static_cast<long long>(r), static_cast<int>(act), have, want);
        return;
      }
    }
}

std::string Describe(const BlockCase& c, const char* path, int64_t batch, bool threaded) {
  char text[160];
  std::snprintf(text, sizeof text, "%s %s L=%d %lldx%lld codebook %zu batch %lld%s", path,
                c.w.axis == BlockAxis::kCols ? "kCols" : "kRows", c.w.block_len, static_cast<long long>(c.w.rows),
                static_cast<long long>(c.w.cols), c.w.codebook.size(), static_cast<long long>(batch),
                threaded ? " threads" : "");
  return text;
}

// One matrix on the current path: batches 1, 3 and 9, an activation per batch (all five over a call's
// batches and bias choices), with and without a pool; outputs against the reference and the dense product.
void RunCase(const BlockCase& c, const char* path, ThreadPool* pool, std::mt19937& rng, int* act_counter) {
  BlockFullyConnectedWeights weights;
  Status ok = weights.Init(c.w);
  CHECK(ok.ok(), "valid block matrix rejected: %s", ok.message().c_str());
  if (!ok.ok()) return;
  CHECK(std::string(weights.path_name()) == path, "path_name %s, expected %s", weights.path_name(), path);
  CHECK(weights.stored_weights() == c.inside, "stored_weights %llu, expected %llu",
        static_cast<unsigned long long>(weights.stored_weights()), static_cast<unsigned long long>(c.inside));
  const int64_t rows = c.w.rows, cols = c.w.cols;
  const std::vector<float> bias = dc_test::RandomVector(static_cast<size_t>(rows), rng, 2.f);
  for (int64_t batch : {1, 3, 9}) {
    const std::vector<float> x = dc_test::RandomVector(static_cast<size_t>(batch * cols), rng);
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), pool}) {
      const Activation act = static_cast<Activation>((*act_counter)++ % 5);
      const float* b = (*act_counter % 3 == 0) ? nullptr : bias.data();
      std::vector<float> scratch(weights.ScratchFloats(batch));
      std::vector<float> y(static_cast<size_t>(batch * rows), NAN), want(y.size(), NAN);
      weights.Run(b, x.data(), batch, y.data(), act, scratch.data(), p);
      BlockFullyConnectedReference(c.w, b, x.data(), batch, want.data(), act);
      const std::string what = Describe(c, path, batch, p != nullptr);
      dc_test::AllClose(y, want, 1e-5, (what + " vs reference").c_str());
      CheckDense(y, c, x, b, batch, act, what + " vs dense");
    }
  }
}

// Every axis, block length and codebook size on the current path, on shapes with and without edge blocks.
void RunPath(const char* path, ThreadPool* pool, std::mt19937& rng) {
  int act_counter = 0;
  struct Shape {
    int64_t rows, cols;
    double density;
  };
  const Shape shapes[] = {{37, 301, 0.6}, {16, 64, 0.5}, {5, 3, 0.7}, {1, 1, 1.0}};
  for (BlockAxis axis : {BlockAxis::kCols, BlockAxis::kRows})
    for (int L : {4, 8, 16})
      for (int n : {1, 2, 16, 17, 32, 33, 256})
        for (const Shape& s : shapes)
          RunCase(RandomBlocks(s.rows, s.cols, axis, L, n, s.density, rng), path, pool, rng, &act_counter);
  // Enough rows and bands that the pool splits them; a fully dense block matrix.
  for (BlockAxis axis : {BlockAxis::kCols, BlockAxis::kRows}) {
    RunCase(RandomBlocks(203, 150, axis, 4, 32, 0.3, rng), path, pool, rng, &act_counter);
    RunCase(RandomBlocks(40, 70, axis, 16, 9, 1.0, rng, 1000), path, pool, rng, &act_counter);
  }
}

// Empty matrices and matrices without blocks: the output is act(bias) (or nothing).
void TestEmpty(const char* path, std::mt19937& rng) {
  for (BlockAxis axis : {BlockAxis::kCols, BlockAxis::kRows})
    for (auto shape : {std::pair<int64_t, int64_t>{0, 0}, {0, 7}, {6, 0}, {9, 20}}) {
      BlockCase c = RandomBlocks(shape.first, shape.second, axis, 8, 4, 0.0, rng);
      c.w.codebook.clear();  // no blocks: a codebook is optional
      BlockFullyConnectedWeights weights;
      Status ok = weights.Init(c.w);
      CHECK(ok.ok(), "%s: empty block matrix rejected: %s", path, ok.message().c_str());
      const std::vector<float> bias(static_cast<size_t>(shape.first), -0.5f);
      const std::vector<float> x(static_cast<size_t>(3 * shape.second) + 1, 1.f);
      std::vector<float> y(static_cast<size_t>(3 * shape.first), NAN), scratch(weights.ScratchFloats(3));
      weights.Run(bias.data(), x.data(), 3, y.data(), Activation::kRelu, scratch.data(), nullptr);
      for (float v : y) CHECK(v == 0.f, "%s: empty matrix gives %g, want relu(-0.5) = 0", path, v);
    }
}

void TestValidation(std::mt19937& rng) {
  const BlockCase good = RandomBlocks(9, 40, BlockAxis::kCols, 8, 4, 1.0, rng, 1000);
  CHECK(ValidateBlockSparseMatrix(good.w).ok(), "valid block matrix rejected");
  auto rejects = [&](const char* what, auto&& spoil) {
    BlockSparseMatrix bad = good.w;
    spoil(bad);
    CHECK(!ValidateBlockSparseMatrix(bad).ok(), "%s accepted", what);
    BlockFullyConnectedWeights weights;
    CHECK(!weights.Init(bad).ok(), "%s accepted by Init", what);
  };
  rejects("block length 5", [](BlockSparseMatrix& w) { w.block_len = 5; });
  rejects("unaligned kCols start", [](BlockSparseMatrix& w) { w.block_start[0] = 3; });
  rejects("start past the columns", [](BlockSparseMatrix& w) { w.block_start.back() = 40; });
  rejects("decreasing starts", [](BlockSparseMatrix& w) { std::swap(w.block_start[0], w.block_start[1]); });
  rejects("code outside the codebook", [](BlockSparseMatrix& w) { w.codes[3] = 4; });
  rejects("missing codebook", [](BlockSparseMatrix& w) { w.codebook.clear(); });
  rejects("257-entry codebook", [](BlockSparseMatrix& w) { w.codebook.resize(257); });
  rejects("short group_ptr", [](BlockSparseMatrix& w) { w.group_ptr.pop_back(); });
  rejects("codes of the wrong length", [](BlockSparseMatrix& w) { w.codes.pop_back(); });
  rejects("unknown axis", [](BlockSparseMatrix& w) { w.axis = static_cast<BlockAxis>(3); });
  FullyConnectedWeights fc;
  CHECK(fc.Init(good.w).ok() && std::string(fc.form_name()) == "block", "FullyConnectedWeights block form");
}

}  // namespace

int main() {
  std::mt19937 rng(11);
  ThreadPool threads(3);
  std::string tested;
  for (const char* path : {"portable", "avx2", "avx512", "neon"}) {
    if (!ForcePath(path)) continue;
    tested += std::string(" ") + path;
    RunPath(path, &threads, rng);
    TestEmpty(path, rng);
  }
  simd::PortableOnly() = false;
  simd::Avx512Disabled() = false;
  CHECK(tested.find("portable") != std::string::npos, "the portable path could not be forced");
  TestValidation(rng);
  std::printf("block paths tested:%s\n", tested.c_str());
  if (dc_test::Failures()) {
    std::fprintf(stderr, "%d failure(s)\n", dc_test::Failures());
    return 1;
  }
  std::printf("block_fully_connected_test: OK\n");
  return 0;
}
