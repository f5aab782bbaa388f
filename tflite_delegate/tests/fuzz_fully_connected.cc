// libFuzzer target: a blob through the codec into DcFullyConnected's weights, then x W^T + b at batch 1, 3
// and 9, each checked against a double-precision product over the decoded dense weights.
//
// Input: byte 0 selects how the layer runs, byte 1 seeds x and the bias, the rest is the blob.
//   byte 0: bit 0 dense mode (the delegate's mode=dense), bits 1-2 threads - 1 (1..3, 3 also for 3),
//           bits 3-5 fused activation (mod 5), bit 6 portable loops instead of the AVX2 clones.
// The blob's CRC field is recomputed before decoding, as in ops/codec/tests/fuzz_decode.cc, so that
// mutations reach the stream decoders and the weight builders instead of stopping at the checksum; the
// unfixed CRC path is fuzz_decode's job.
//
// Checks: no crash or sanitizer report; a blob DecodeSparse accepts is accepted by
// FullyConnectedWeights::Init (else the delegate would reject a valid layer); every output within
// float32 accumulation error of the reference. Tensors above 2^20 elements are rejected before anything is
// allocated: their size is the file's to justify, and a fuzzer-made header can ask for gigabytes.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "dc_codec.h"
#include "fuzz_blob_util.h"
#include "kernel_test_util.h"
#include "kernels/cpu_dispatch.h"
#include "kernels/fully_connected.h"
#include "thread_pool.h"

using dc::codec::BlobInfo;
using dc::codec::SparseMatrix;
using namespace dc::kernels;
using dc::delegate::ThreadPool;

namespace {

constexpr uint64_t kMaxElements = uint64_t{1} << 20;
constexpr int kBatches[] = {1, 3, 9};
constexpr int kMaxBatch = 9;

void Fail(const char* what, int batch, int64_t row, double want, double have, double bound) {
  std::fprintf(stderr, "fuzz_fully_connected: %s: batch %d row %lld: got %.9g want %.9g (bound %.3g)\n", what,
               batch, static_cast<long long>(row), have, want, bound);
  std::abort();
}

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz_fully_connected: %s\n", what);
    std::abort();
  }
}

ThreadPool* Pool(int threads) {
  // One pool per size for the whole run: creating threads for every input would dominate the exec rate.
  static std::unique_ptr<ThreadPool> pools[4];
  if (!pools[threads]) pools[threads] = std::make_unique<ThreadPool>(threads);
  return pools[threads].get();
}

// Small deterministic generator for x and the bias (values in [-1, 1], exact in float).
struct Lcg {
  uint32_t state;
  float Next() {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(static_cast<int32_t>(state >> 8) - (1 << 23)) / static_cast<float>(1 << 23);
  }
};

// Compares y (batch x rows) with the double-precision product. Any summation order of n float products
// is within gamma(n+1) * sum |w||x| of the exact sum (Higham, ch. 3), gamma(k) = k u / (1 - k u), u = 2^-24;
// the activations are 1-Lipschitz; tanh's float rounding and subnormal flushes add the small constants.
void CheckOutputs(const std::vector<float>& dense, int64_t rows, int64_t cols, const std::vector<float>& bias,
                  const std::vector<float>& x, int batch, Activation act, const std::vector<float>& y,
                  const char* form) {
  const double u = std::ldexp(1.0, -24);
  const double n = static_cast<double>(cols + 2);
  const double gamma = n * u / (1.0 - n * u);
  for (int b = 0; b < batch; ++b)
    for (int64_t r = 0; r < rows; ++r) {
      double sum = bias[static_cast<size_t>(r)], scale = std::fabs(sum);
      const float* w = dense.data() + r * cols;
      const float* xb = x.data() + static_cast<int64_t>(b) * cols;
      for (int64_t c = 0; c < cols; ++c) {
        const double p = static_cast<double>(w[c]) * xb[c];
        sum += p;
        scale += std::fabs(p);
      }
      const double want = dc_test::ActivateReference(sum, act);
      const double have = y[static_cast<size_t>(b * rows + r)];
      const double bound = gamma * scale + 4 * u * std::fabs(want) + 1e-30;
      if (!(std::fabs(want - have) <= bound)) Fail(form, batch, r, want, have, bound);
    }
}

void RunLayer(const uint8_t options, const uint8_t seed, const uint8_t* blob, size_t size) {
  BlobInfo info;
  if (!dc::codec::ParseInfo(blob, size, &info).ok()) return;
  if (info.num_elements > kMaxElements) return;
  std::vector<float> dense(info.num_elements);
  const bool dense_ok = dc::codec::DecodeDense(blob, size, dense.data(), dense.size()).ok();
  SparseMatrix sparse;
  const bool sparse_ok = dc::codec::DecodeSparse(blob, size, &sparse).ok();
  Check(dense_ok == sparse_ok, "DecodeDense and DecodeSparse disagree on whether the blob is valid");
  if (!dense_ok) return;
  const int64_t rows = sparse.rows, cols = sparse.cols;
  Check(static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols) == (info.shape.empty() ? 1 : info.num_elements),
        "sparse shape does not match the blob's element count");

  // The value check needs a finite reference that float32 can also reach: fuzzed codebooks hold NaN, inf
  // and 1e38 as readily as ordinary weights. Those layers still run (crash-freedom), unchecked.
  bool finite = true;
  for (float w : dense) finite &= std::isfinite(w) && std::fabs(w) < 1e30f;

  const bool dense_mode = options & 1;
  const int threads = 1 + std::min(2, (options >> 1) & 3);
  const auto act = static_cast<Activation>(((options >> 3) & 7) % 5);
  simd::PortableOnly().store((options >> 6) & 1);

  // A block-layout blob runs on the block form, as in the delegate and the TF op.
  dc::codec::BlockSparseMatrix block;
  const bool as_block = info.block_layout && !dense_mode;
  if (as_block) {
    Check(dc::codec::DecodeBlockSparse(blob, size, &block).ok(),
          "DecodeBlockSparse refuses a block blob that DecodeDense accepts");
  }

  FullyConnectedWeights weights;
  if (!dense_mode) {
    const dc::kernels::Status built = as_block ? weights.Init(std::move(block)) : weights.Init(std::move(sparse));
    // A layer without inputs (cols == 0) decodes but is no FC layer: Init refuses it with an error status,
    // which is the behaviour wanted; anything else DecodeSparse accepts must be accepted.
    if (!built.ok() && cols == 0) return;
    if (!built.ok()) {
      std::fprintf(stderr, "fuzz_fully_connected: decoded matrix rejected: %s\n", built.message().c_str());
      std::abort();
    }
  }

  // Lets the corpus replay test check that the seeds reach every weight form.
  static const bool report_form = std::getenv("FUZZ_FC_REPORT_FORM") != nullptr;
  if (report_form) std::fprintf(stderr, "form: %s\n", dense_mode ? "dense" : weights.form_name());

  Lcg lcg{0x9E3779B9u ^ seed};
  std::vector<float> bias(static_cast<size_t>(rows));
  for (float& v : bias) v = lcg.Next();
  std::vector<float> x(static_cast<size_t>(cols) * kMaxBatch);
  for (float& v : x) v = lcg.Next();
  std::vector<float> scratch;
  for (int batch : kBatches) {
    std::vector<float> y(static_cast<size_t>(rows) * batch, std::nanf(""));
    if (dense_mode) {
      DenseFullyConnected(dense.data(), rows, cols, bias.data(), x.data(), batch, y.data(), act, Pool(threads));
    } else {
      scratch.assign(weights.ScratchFloats(batch), 0.0f);
      weights.Run(bias.data(), x.data(), batch, y.data(), act, scratch.data(), Pool(threads));
    }
    if (finite) CheckOutputs(dense, rows, cols, bias, x, batch, act, y, dense_mode ? "dense" : weights.form_name());
  }
  simd::PortableOnly().store(false);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  std::vector<uint8_t> blob(data + 2, data + size);
  size_t offset;
  if (dc_fuzz::CrcOffset(blob.data(), blob.size(), &offset)) {
    const uint32_t crc = dc::codec::Crc32(blob.data() + offset + 4, blob.size() - offset - 4);
    for (int i = 0; i < 4; ++i) blob[offset + i] = static_cast<uint8_t>(crc >> (8 * i));
  }
  RunLayer(data[0], data[1], blob.data(), blob.size());
  return 0;
}
