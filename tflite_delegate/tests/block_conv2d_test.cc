// Test of DcConv2D on block-sparse filters (kernels/block_conv2d.h): BlockConv2D against the naive dense
// convolution (ReferenceConv2D) on every block path this CPU can run, both block axes, block lengths 4, 8 and
// 16, 1x1 convolutions (stride 1, and strided) and 3x3 ones (SAME / VALID padding, strides, dilation), input
// channels that are and are not multiples of the block length, batches 1 and 3, more pixels than one tile,
// every fused activation, with and without bias, with and without threads. Scratch is sized exactly by
// BlockConv2DScratchFloats, so the sanitizer build catches any write past it. Built with
// -fsanitize=address,undefined by tests; exits nonzero on failure and prints the paths it covered.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/block_conv2d.h"
#include "thread_pool.h"

using dc::codec::BlockAxis;
using namespace dc::kernels;
using dc::delegate::ThreadPool;

namespace {

int cases = 0;

struct ConvCase {
  Padding padding;
  int batch, in_h, in_w, in_c, out_c, kernel, stride, dilation;
};

void RunCase(const ConvCase& k, BlockAxis axis, int L, const char* path, ThreadPool* pool, std::mt19937& rng) {
  ConvGeometry g;
  g.batch = k.batch; g.in_h = k.in_h; g.in_w = k.in_w; g.in_c = k.in_c;
  g.kernel_h = g.kernel_w = k.kernel;
  g.stride_h = g.stride_w = k.stride;
  g.dilation_h = g.dilation_w = k.dilation;
  Status st = ComputeConvGeometry(k.padding, &g);
  CHECK(st.ok(), "geometry rejected: %s", st.message().c_str());
  if (!st.ok()) return;
  const dc_test::BlockCase c = dc_test::RandomBlocks(k.out_c, g.PatchSize(), axis, L, 32, 0.3, rng);
  BlockFullyConnectedWeights w;
  st = w.Init(c.w);
  CHECK(st.ok(), "valid block matrix rejected: %s", st.message().c_str());
  if (!st.ok()) return;
  const std::vector<float> x = dc_test::RandomVector(static_cast<size_t>(k.batch) * k.in_h * k.in_w * k.in_c, rng);
  const std::vector<float> bias = dc_test::RandomVector(static_cast<size_t>(k.out_c), rng, 0.5f);
  const size_t out_n = static_cast<size_t>(g.OutPixels()) * k.out_c;
  for (int a = 0; a <= 4; ++a) {
    const Activation act = static_cast<Activation>(a);
    const float* b = a == 2 ? nullptr : bias.data();
    std::vector<float> scratch(BlockConv2DScratchFloats(w, g), NAN);
    std::vector<float> want(out_n), got(out_n, -777.f);
    ReferenceConv2D(c.dense.data(), k.out_c, b, g, x.data(), want.data(), act);
    BlockConv2D(w, b, g, x.data(), got.data(), act, scratch.data(), pool);
    char what[200];
    std::snprintf(what, sizeof what, "%s %s L=%d %s %dx%dx%dx%d -> %d k%d s%d d%d act %d%s", path,
                  axis == BlockAxis::kCols ? "kCols" : "kRows", L, k.padding == Padding::kSame ? "SAME" : "VALID",
                  k.batch, k.in_h, k.in_w, k.in_c, k.out_c, k.kernel, k.stride, k.dilation, a,
                  pool ? " threads" : "");
    dc_test::AllClose(got, want, 1e-5, what);
    ++cases;
  }
}

void Sweep(const char* path, ThreadPool* pool, std::mt19937& rng) {
  const ConvCase shapes[] = {
      {Padding::kValid, 1, 5, 6, 32, 24, 1, 1, 1},   // pointwise: the pixel is the patch
      {Padding::kSame, 3, 4, 3, 16, 17, 1, 1, 1},    // pointwise, batch 3, out_c not a multiple of L
      {Padding::kSame, 1, 7, 7, 8, 9, 1, 2, 1},      // strided pointwise
      {Padding::kSame, 1, 6, 5, 16, 20, 3, 1, 1},    // 3x3 SAME: taps in the padding
      {Padding::kValid, 2, 9, 8, 8, 12, 3, 2, 1},    // 3x3 VALID stride 2, batch 2
      {Padding::kSame, 1, 8, 9, 6, 10, 3, 2, 2},     // in_c 6: blocks cross taps; dilation
      {Padding::kSame, 2, 10, 9, 4, 8, 3, 1, 1},     // 180 pixels: several tiles
  };
  for (BlockAxis axis : {BlockAxis::kCols, BlockAxis::kRows})
    for (int L : {4, 8, 16})
      for (const ConvCase& k : shapes) RunCase(k, axis, L, path, pool, rng);
}

// A block matrix whose columns are not the patch size is a caller error the glue prevents (the blob shape is
// checked against the options); here only that a layer without blocks gives act(bias).
void TestNoBlocks(std::mt19937& rng) {
  ConvGeometry g;
  g.batch = 1; g.in_h = 3; g.in_w = 3; g.in_c = 8; g.kernel_h = g.kernel_w = 3;
  CHECK(ComputeConvGeometry(Padding::kSame, &g).ok(), "geometry rejected");
  dc_test::BlockCase c = dc_test::RandomBlocks(5, g.PatchSize(), BlockAxis::kCols, 8, 4, 0.0, rng);
  c.w.codebook.clear();
  BlockFullyConnectedWeights w;
  CHECK(w.Init(c.w).ok(), "empty block matrix rejected");
  const std::vector<float> x(72, 1.f), bias(5, -0.5f);
  std::vector<float> y(45, NAN), scratch(BlockConv2DScratchFloats(w, g));
  BlockConv2D(w, bias.data(), g, x.data(), y.data(), Activation::kRelu, scratch.data(), nullptr);
  for (float v : y) CHECK(v == 0.f, "layer without blocks gives %g, want relu(-0.5) = 0", v);
}

}  // namespace

int main() {
  std::mt19937 rng(17);
  ThreadPool threads(3);
  std::string tested;
  for (const char* path : {"portable", "avx2", "avx512", "neon"}) {
    if (!dc_test::ForcePath(path)) continue;
    tested += std::string(" ") + path;
    for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &threads}) Sweep(path, pool, rng);
  }
  simd::PortableOnly() = false;
  simd::Avx512Disabled() = false;
  TestNoBlocks(rng);
  std::printf("block paths tested:%s\n", tested.c_str());
  if (dc_test::Failures()) {
    std::fprintf(stderr, "%d failure(s)\n", dc_test::Failures());
    return 1;
  }
  std::printf("block_conv2d_test: OK (%d cases)\n", cases);
  return 0;
}
