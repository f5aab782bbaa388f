// Test of the DcConv2D math (kernels/conv2d_math.cc): the sparse im2col GEMM and the dense fallback against a
// naive direct convolution, over a sweep of SAME/VALID padding, strides, dilations, kernel shapes, channel
// counts, batch sizes (ragged last panel), every fused activation, with and without bias, on one and three
// threads; also the geometry (TFLite's output sizes and padding) and its errors.
// On x86-64 every case runs twice: portable loops and the AVX2 clones; an aarch64 build runs NEON.
// Built with -fsanitize=address,undefined by tests/test_kernels_conv.py; exits nonzero on failure.
#include <cstdio>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/conv2d.h"
#include "kernels/neon_math.h"
#include "thread_pool.h"

using namespace dc::kernels;
using dc::delegate::ThreadPool;
using dc_test::AllClose;

namespace {

int cases = 0;

void RunCase(Padding padding, int batch, int in_h, int in_w, int in_c, int out_c, int kh, int kw, int sh, int sw,
             int dh, int dw, double density, int codebook, std::mt19937& rng, ThreadPool* pool) {
  ConvGeometry g;
  g.batch = batch; g.in_h = in_h; g.in_w = in_w; g.in_c = in_c;
  g.kernel_h = kh; g.kernel_w = kw; g.stride_h = sh; g.stride_w = sw; g.dilation_h = dh; g.dilation_w = dw;
  Status st = ComputeConvGeometry(padding, &g);
  if (!st.ok()) {
    CHECK(false, "geometry rejected: %s", st.message().c_str());
    return;
  }
  const int cols = kh * kw * in_c;
  dc_test::SharedMatrix w = dc_test::RandomShared(out_c, cols, density, codebook, cols > 600, rng, 5);
  CHECK(ValidateSparseMatrix(w.sparse).ok(), "valid matrix rejected");
  const std::vector<float> x = dc_test::RandomVector(static_cast<size_t>(batch) * in_h * in_w * in_c, rng);
  const std::vector<float> bias = dc_test::RandomVector(out_c, rng, 0.5f);
  const size_t out_n = static_cast<size_t>(g.OutPixels()) * out_c;
  std::vector<float> scratch(Conv2DScratchFloats(g));
  for (int a = 0; a <= 4; ++a) {
    const Activation act = static_cast<Activation>(a);
    for (const float* b : {bias.data(), static_cast<const float*>(nullptr)}) {
      if (b == nullptr && a != 0) continue;
      std::vector<float> want(out_n), got(out_n, -777.f), got_dense(out_n, -777.f);
      ReferenceConv2D(w.dense.data(), out_c, b, g, x.data(), want.data(), act);
      SparseConv2D(w.sparse, b, g, x.data(), got.data(), act, scratch.data(), pool);
      DenseConv2D(w.dense.data(), out_c, b, g, x.data(), got_dense.data(), act, scratch.data(), pool);
      const std::string what = std::string(padding == Padding::kSame ? "SAME" : "VALID") + " " +
                               std::to_string(batch) + "x" + std::to_string(in_h) + "x" + std::to_string(in_w) + "x" +
                               std::to_string(in_c) + " -> " + std::to_string(out_c) + " k" + std::to_string(kh) +
                               "x" + std::to_string(kw) + " s" + std::to_string(sh) + "," + std::to_string(sw) +
                               " d" + std::to_string(dh) + "," + std::to_string(dw) + " act " + std::to_string(a);
      AllClose(got, want, 1e-5, ("sparse " + what).c_str());
      AllClose(got_dense, want, 1e-5, ("dense " + what).c_str());
      ++cases;
    }
  }
}

void TestGeometry() {
  // TFLite's numbers: SAME 9 -> ceil(9 / 2) = 5 with a 3x3 kernel needs 2 padding pixels, 1 on top.
  ConvGeometry g;
  g.batch = 1; g.in_h = 9; g.in_w = 10; g.in_c = 1; g.kernel_h = 3; g.kernel_w = 4; g.stride_h = 2; g.stride_w = 2;
  CHECK(ComputeConvGeometry(Padding::kSame, &g).ok(), "SAME geometry rejected");
  CHECK(g.out_h == 5 && g.out_w == 5 && g.pad_top == 1 && g.pad_left == 1, "SAME: %d %d %d %d", g.out_h, g.out_w,
        g.pad_top, g.pad_left);
  CHECK(ComputeConvGeometry(Padding::kValid, &g).ok(), "VALID geometry rejected");
  CHECK(g.out_h == 4 && g.out_w == 4 && g.pad_top == 0 && g.pad_left == 0, "VALID: %d %d", g.out_h, g.out_w);
  g.dilation_h = 5;  // effective kernel 11 > 9 rows
  CHECK(!ComputeConvGeometry(Padding::kValid, &g).ok(), "empty VALID output accepted");
  CHECK(ComputeConvGeometry(Padding::kSame, &g).ok(), "SAME with a large dilation rejected");
  g.dilation_h = 1;
  g.stride_w = 0;
  CHECK(!ComputeConvGeometry(Padding::kSame, &g).ok(), "zero stride accepted");
  g.stride_w = 1;
  CHECK(!ComputeConvGeometry(static_cast<Padding>(2), &g).ok(), "padding 2 accepted");
}

void Sweep(std::mt19937& rng, ThreadPool* pool) {
  for (Padding p : {Padding::kSame, Padding::kValid}) {
    RunCase(p, 1, 28, 28, 1, 20, 5, 5, 1, 1, 1, 1, 0.66, 16, rng, pool);   // LeNet-5 conv1
    RunCase(p, 2, 12, 12, 20, 50, 5, 5, 1, 1, 1, 1, 0.12, 32, rng, pool);  // LeNet-5 conv2, batch 2, fillers
    RunCase(p, 1, 9, 11, 3, 7, 3, 3, 2, 2, 1, 1, 0.5, 8, rng, pool);
    RunCase(p, 3, 8, 7, 4, 5, 3, 2, 1, 3, 1, 1, 0.4, 5, rng, pool);
    RunCase(p, 1, 10, 10, 2, 6, 3, 3, 1, 1, 2, 2, 0.6, 4, rng, pool);      // dilation
    RunCase(p, 1, 11, 9, 3, 4, 2, 3, 1, 1, 3, 1, 0.7, 3, rng, pool);       // unequal dilation
    RunCase(p, 2, 6, 6, 16, 9, 1, 1, 1, 1, 1, 1, 0.3, 6, rng, pool);       // pointwise
    RunCase(p, 1, 7, 7, 5, 3, 1, 1, 2, 2, 1, 1, 0.5, 2, rng, pool);        // strided pointwise
    RunCase(p, 1, 5, 5, 2, 3, 5, 5, 3, 3, 1, 1, 0.9, 7, rng, pool);        // kernel = input
    RunCase(p, 1, 4, 4, 1, 2, 3, 3, 1, 1, 1, 1, 0.0, 1, rng, pool);        // all pruned
  }
}

}  // namespace

int main() {
  std::mt19937 rng(11);
  TestGeometry();
  ThreadPool single(1), threads(3);
#if defined(__x86_64__)
  const bool modes[] = {true, false};  // portable loops, then the AVX2 clones if the CPU has them
#else
  const bool modes[] = {false};
#endif
  for (bool portable : modes) {
    simd::PortableOnly() = portable;
    std::printf("conv2d_test: inner loops %s\n", simd::PathName());
    for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &single, &threads}) Sweep(rng, pool);
  }
  if (dc_test::Failures()) {
    std::fprintf(stderr, "%d failure(s)\n", dc_test::Failures());
    return 1;
  }
  std::printf("conv2d_test: OK (%d cases)\n", cases);
  return 0;
}
