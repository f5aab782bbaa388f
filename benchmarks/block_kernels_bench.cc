// Timing program of benchmarks/block_kernels.py (which builds it against the kernels library): the
// block-sparse FC loops per path on a block-sparse matrix, beside the unstructured FC loops on an
// unstructured matrix of the same density, plus this machine's copy bandwidth and FMA peak for a roofline.
// Prints one JSON object per line. Times are the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so that
// other processes on a shared machine lengthen them only through the caches they share, not by preemption.
//   block_kernels_bench machine
//   block_kernels_bench block <cols|rows> <L> <size> <density> <codebook> <path> <runs>
//   block_kernels_bench unstructured <size> <density> <codebook> <portable|avx2> <runs>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernel_test_util.h"
#include "kernels/block_fully_connected.h"
#include "kernels/cpu_dispatch.h"
#include "kernels/fully_connected.h"

using namespace dc::kernels;
namespace {

// Seconds of CPU time this thread has run.
double ThreadSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Median over rounds of the mean time of `runs` calls, and the fastest round, in microseconds.
template <typename Fn>
void TimeRounds(int runs, const Fn& fn, double* median_us, double* min_us) {
  for (int i = 0; i < std::max(5, runs / 5); ++i) fn();
  std::vector<double> rounds;
  for (int round = 0; round < 9; ++round) {
    const double t0 = ThreadSeconds();
    for (int i = 0; i < runs; ++i) fn();
    rounds.push_back((ThreadSeconds() - t0) / runs * 1e6);
  }
  std::sort(rounds.begin(), rounds.end());
  *median_us = rounds[rounds.size() / 2];
  *min_us = rounds[0];
}

// Read + written bytes per second of memcpy over a buffer of `bytes`.
double CopyGBs(size_t bytes) {
  std::vector<char> a(bytes, 1), b(bytes, 2);
  double median, best;
  TimeRounds(std::max<int>(3, static_cast<int>((size_t{1} << 30) / bytes / 8)), [&] {
    std::memcpy(b.data(), a.data(), bytes);
    a[bytes / 2] = b[bytes / 3];
  }, &median, &best);
  return 2.0 * bytes / (best * 1e-6) / 1e9;
}

#if defined(__x86_64__)
// FMA throughput with enough independent chains to hide the latency: 12 vectors of `width` floats.
__attribute__((target("avx512f"))) double FmaPeak512(long iters) {
  __m512 acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = _mm512_set1_ps(static_cast<float>(k));
  const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
  const double t0 = ThreadSeconds();
  for (long i = 0; i < iters; ++i)
    for (int k = 0; k < 12; ++k) acc[k] = _mm512_fmadd_ps(acc[k], m, a);
  const double s = ThreadSeconds() - t0;
  float sink[16];
  __m512 sum = acc[0];
  for (int k = 1; k < 12; ++k) sum = _mm512_add_ps(sum, acc[k]);
  _mm512_storeu_ps(sink, sum);
  if (sink[0] == 12345.f) std::puts("");
  return 2.0 * 16 * 12 * iters / s / 1e9;
}

__attribute__((target("avx2,fma"))) double FmaPeak256(long iters) {
  __m256 acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = _mm256_set1_ps(static_cast<float>(k));
  const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
  const double t0 = ThreadSeconds();
  for (long i = 0; i < iters; ++i)
    for (int k = 0; k < 12; ++k) acc[k] = _mm256_fmadd_ps(acc[k], m, a);
  const double s = ThreadSeconds() - t0;
  float sink[8];
  __m256 sum = acc[0];
  for (int k = 1; k < 12; ++k) sum = _mm256_add_ps(sum, acc[k]);
  _mm256_storeu_ps(sink, sum);
  if (sink[0] == 12345.f) std::puts("");
  return 2.0 * 8 * 12 * iters / s / 1e9;
}
#endif

int Machine() {
  double fma512 = 0, fma256 = 0;
#if defined(__x86_64__)
  for (int i = 0; i < 3; ++i) {
    if (__builtin_cpu_supports("avx512f")) fma512 = std::max(fma512, FmaPeak512(20000000));
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) fma256 = std::max(fma256, FmaPeak256(20000000));
  }
#endif
  std::printf("{\"copy_gbs_4mb\": %.2f, \"copy_gbs_128mb\": %.2f, \"fma_gflops_avx512\": %.2f, "
              "\"fma_gflops_avx2\": %.2f, \"block_path\": \"%s\"}\n",
              CopyGBs(size_t{4} << 20), CopyGBs(size_t{128} << 20), fma512, fma256, BlockFullyConnectedPathName());
  return 0;
}

// Blocks at `density` of the aligned positions of a size x size matrix, codes uniform over the codebook.
dc::codec::BlockSparseMatrix RandomBlocks(int64_t size, dc::codec::BlockAxis axis, int L, double density, int n) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  dc::codec::BlockSparseMatrix w;
  w.rows = w.cols = size;
  w.axis = axis;
  w.block_len = L;
  for (int k = 0; k < n; ++k) w.codebook.push_back(static_cast<float>(coin(rng) - 0.5));
  const int64_t step = axis == dc::codec::BlockAxis::kCols ? L : 1;
  w.group_ptr.push_back(0);
  for (int64_t g = 0; g < w.NumGroups(); ++g) {
    for (int64_t start = 0; start < size; start += step) {
      if (coin(rng) >= density) continue;
      w.block_start.push_back(static_cast<uint32_t>(start));
      for (int i = 0; i < L; ++i) w.codes.push_back(static_cast<uint8_t>(rng() % n));
    }
    w.group_ptr.push_back(static_cast<uint32_t>(w.block_start.size()));
  }
  return w;
}

bool ForcePath(const std::string& path) {
  simd::PortableOnly() = path == "portable";
  simd::Avx512Disabled() = path == "avx2";
  return path == BlockFullyConnectedPathName();
}

int Block(char** argv) {
  const auto axis = std::string(argv[2]) == "rows" ? dc::codec::BlockAxis::kRows : dc::codec::BlockAxis::kCols;
  const int L = std::atoi(argv[3]), n = std::atoi(argv[6]), runs = std::atoi(argv[8]);
  const int64_t size = std::atoll(argv[4]);
  const std::string path = argv[7];
  if (!ForcePath(path)) {
    std::printf("{\"error\": \"path %s not available here\"}\n", path.c_str());
    return 0;
  }
  dc::codec::BlockSparseMatrix w = RandomBlocks(size, axis, L, std::atof(argv[5]), n);
  const uint64_t blocks = w.NumBlocks();
  BlockFullyConnectedWeights weights;
  Status ok = weights.Init(std::move(w));
  if (!ok.ok()) {
    std::printf("{\"error\": \"%s\"}\n", ok.message().c_str());
    return 1;
  }
  std::mt19937 rng(3);
  std::vector<float> x = dc_test::RandomVector(size, rng), bias(size, 0.1f), y(size), scratch(weights.ScratchFloats(1));
  double median, best;
  TimeRounds(runs, [&] { weights.Run(bias.data(), x.data(), 1, y.data(), Activation::kNone, scratch.data(), nullptr); },
             &median, &best);
  std::printf("{\"path\": \"%s\", \"median_us\": %.3f, \"min_us\": %.3f, \"weights\": %llu, \"blocks\": %llu, "
              "\"resident_bytes\": %zu}\n", weights.path_name(), median, best,
              static_cast<unsigned long long>(weights.stored_weights()), static_cast<unsigned long long>(blocks),
              weights.ResidentBytes());
  return 0;
}

int Unstructured(char** argv) {
  const int64_t size = std::atoll(argv[2]);
  const int n = std::atoi(argv[4]), runs = std::atoi(argv[6]);
  const std::string path = argv[5];
  simd::PortableOnly() = path == "portable";
  std::mt19937 rng(5);
  dc_test::SharedMatrix m = dc_test::RandomShared(static_cast<int>(size), static_cast<int>(size), std::atof(argv[3]),
                                                  n, false, rng);
  m.dense = {};
  FullyConnectedWeights weights;
  Status ok = weights.Init(std::move(m.sparse));
  if (!ok.ok()) {
    std::printf("{\"error\": \"%s\"}\n", ok.message().c_str());
    return 1;
  }
  std::vector<float> x = dc_test::RandomVector(size, rng), bias(size, 0.1f), y(size), scratch(weights.ScratchFloats(1));
  double median, best;
  TimeRounds(runs, [&] { weights.Run(bias.data(), x.data(), 1, y.data(), Activation::kNone, scratch.data(), nullptr); },
             &median, &best);
  std::printf("{\"path\": \"%s\", \"form\": \"%s\", \"median_us\": %.3f, \"min_us\": %.3f, \"weights\": %llu, "
              "\"resident_bytes\": %zu}\n", FullyConnectedUsesAvx2() ? "avx2" : "portable", weights.form_name(),
              median, best, static_cast<unsigned long long>(weights.nonzeros()), weights.ResidentBytes());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "machine") return Machine();
  if (mode == "block" && argc == 9) return Block(argv);
  if (mode == "unstructured" && argc == 7) return Unstructured(argv);
  std::fprintf(stderr, "usage: see the top of block_kernels_bench.cc\n");
  return 2;
}
