// Test of the DcDepthwiseConv2D math (kernels/depthwise_conv2d_math.cc): the sparse per-channel kernel and the
// dense tap-major fallback against a naive depthwise convolution with TFLite's [1, kh, kw, out_c] filter, over
// SAME/VALID padding, strides, dilations, depth multipliers, kernel shapes, batch sizes, every fused
// activation, with and without bias, on one and three threads.
// Built with -fsanitize=address,undefined by tests/test_kernels_conv.py; exits nonzero on failure.
#include <cstdio>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/depthwise_conv2d.h"
#include "kernels/neon_math.h"
#include "thread_pool.h"

using namespace dc::kernels;
using dc::delegate::ThreadPool;
using dc_test::AllClose;

namespace {

int cases = 0;

void RunCase(Padding padding, int batch, int in_h, int in_w, int in_c, int mult, int kh, int kw, int sh, int sw,
             int dh, int dw, double density, int codebook, std::mt19937& rng, ThreadPool* pool) {
  ConvGeometry g;
  g.batch = batch; g.in_h = in_h; g.in_w = in_w; g.in_c = in_c;
  g.kernel_h = kh; g.kernel_w = kw; g.stride_h = sh; g.stride_w = sw; g.dilation_h = dh; g.dilation_w = dw;
  Status st = ComputeConvGeometry(padding, &g);
  if (!st.ok()) {
    CHECK(false, "geometry rejected: %s", st.message().c_str());
    return;
  }
  const int out_c = in_c * mult, taps = kh * kw;
  // The exporter's layout: one row per output channel, one column per tap.
  dc_test::SharedMatrix w = dc_test::RandomShared(out_c, taps, density, codebook, taps > 600, rng, 4);
  CHECK(ValidateSparseMatrix(w.sparse).ok(), "valid matrix rejected");
  std::vector<float> tflite_filter(static_cast<size_t>(taps) * out_c);  // [1, kh, kw, out_c]
  for (int oc = 0; oc < out_c; ++oc)
    for (int t = 0; t < taps; ++t)
      tflite_filter[static_cast<size_t>(t) * out_c + oc] = w.dense[static_cast<size_t>(oc) * taps + t];
  const std::vector<float> x = dc_test::RandomVector(static_cast<size_t>(batch) * in_h * in_w * in_c, rng);
  const std::vector<float> bias = dc_test::RandomVector(out_c, rng, 0.5f);
  const size_t out_n = static_cast<size_t>(g.OutPixels()) * out_c;
  for (int a = 0; a <= 4; ++a) {
    const Activation act = static_cast<Activation>(a);
    for (const float* b : {bias.data(), static_cast<const float*>(nullptr)}) {
      if (b == nullptr && a != 0) continue;
      std::vector<float> want(out_n), got(out_n, -777.f), got_dense(out_n, -777.f);
      ReferenceDepthwiseConv2D(tflite_filter.data(), mult, b, g, x.data(), want.data(), act);
      SparseDepthwiseConv2D(w.sparse, mult, b, g, x.data(), got.data(), act, pool);
      DenseDepthwiseConv2D(tflite_filter.data(), mult, b, g, x.data(), got_dense.data(), act, pool);
      const std::string what = std::string(padding == Padding::kSame ? "SAME" : "VALID") + " " +
                               std::to_string(batch) + "x" + std::to_string(in_h) + "x" + std::to_string(in_w) + "x" +
                               std::to_string(in_c) + " mult " + std::to_string(mult) + " k" + std::to_string(kh) +
                               "x" + std::to_string(kw) + " s" + std::to_string(sh) + "," + std::to_string(sw) +
                               " d" + std::to_string(dh) + "," + std::to_string(dw) + " act " + std::to_string(a);
      AllClose(got, want, 1e-5, ("sparse " + what).c_str());
      AllClose(got_dense, want, 1e-5, ("dense " + what).c_str());
      ++cases;
    }
  }
}

void Sweep(std::mt19937& rng, ThreadPool* pool) {
  for (Padding p : {Padding::kSame, Padding::kValid}) {
    RunCase(p, 1, 16, 16, 8, 1, 3, 3, 1, 1, 1, 1, 0.6, 16, rng, pool);  // MobileNet block
    RunCase(p, 2, 15, 13, 6, 1, 3, 3, 2, 2, 1, 1, 0.5, 8, rng, pool);   // strided, odd sizes
    RunCase(p, 1, 9, 9, 3, 2, 3, 3, 1, 1, 1, 1, 0.7, 5, rng, pool);     // multiplier 2
    RunCase(p, 1, 8, 10, 2, 3, 5, 3, 2, 1, 1, 1, 0.8, 4, rng, pool);    // multiplier 3, non-square
    RunCase(p, 1, 12, 12, 4, 1, 3, 3, 1, 1, 2, 2, 0.6, 4, rng, pool);   // dilation
    RunCase(p, 3, 7, 9, 5, 2, 2, 3, 1, 1, 3, 2, 0.9, 3, rng, pool);     // unequal dilation, batch 3
    RunCase(p, 1, 6, 6, 4, 1, 1, 1, 1, 1, 1, 1, 0.5, 2, rng, pool);     // 1x1
    RunCase(p, 1, 5, 5, 2, 1, 5, 5, 1, 1, 1, 1, 1.0, 7, rng, pool);     // kernel = input, dense weights
    RunCase(p, 1, 4, 4, 3, 1, 3, 3, 1, 1, 1, 1, 0.0, 1, rng, pool);     // all pruned
  }
  RunCase(Padding::kSame, 1, 3, 40, 2, 1, 1, 300, 1, 1, 1, 1, 0.2, 9, rng, pool);  // 300 taps: fillers
}

}  // namespace

int main() {
  std::mt19937 rng(13);
  ThreadPool single(1), threads(3);
  std::printf("depthwise_conv2d_test: activation loops %s\n", DC_KERNELS_NEON ? "neon" : "portable");
  for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &single, &threads}) Sweep(rng, pool);
  if (dc_test::Failures()) {
    std::fprintf(stderr, "%d failure(s)\n", dc_test::Failures());
    return 1;
  }
  std::printf("depthwise_conv2d_test: OK (%d cases)\n", cases);
  return 0;
}
