// Inner loops of DcFullyConnected (sparse P+Q form and the dense fallback), with an AVX2 path chosen at
// run time on x86-64 so that one build runs on every x86-64 machine; other targets use the portable loops,
// which compilers vectorise for their own SIMD (NEON on Android).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/fully_connected.h"
#include "thread_pool.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DC_HAVE_X86_DISPATCH 1
#include <immintrin.h>
#else
#define DC_HAVE_X86_DISPATCH 0
#endif

namespace dc::delegate {
namespace {

using codec::SparseMatrix;

inline float Activate(float v, Activation act) {
  switch (act) {
    case Activation::kNone: return v;
    case Activation::kRelu: return v < 0.f ? 0.f : v;
    case Activation::kReluN1To1: return std::min(1.f, std::max(-1.f, v));
    case Activation::kRelu6: return std::min(6.f, std::max(0.f, v));
    case Activation::kTanh: return std::tanh(v);
  }
  return v;
}

// Rows are split in about this many tasks per thread so that uneven rows still balance.
constexpr int kTasksPerThread = 4;

template <typename Fn>
void ForRowRanges(int64_t rows, ThreadPool* pool, const Fn& fn) {
  const int threads = pool ? pool->num_threads() : 1;
  if (threads <= 1 || rows < 2 * threads) {
    fn(int64_t{0}, rows);
    return;
  }
  const int tasks = static_cast<int>(std::min<int64_t>(rows, int64_t{threads} * kTasksPerThread));
  pool->ParallelFor(tasks, [&](int task) {
    const int64_t begin = rows * task / tasks, end = rows * (task + 1) / tasks;
    fn(begin, end);
  });
}

// ---- portable loops -------------------------------------------------------------------------------

// One row, one input vector: the loop of the codec's contract, with two accumulators to halve the
// floating-point dependency chain.
inline float SparseRowDot(const SparseMatrix& w, int64_t r, const float* x) {
  const uint8_t* delta = w.delta.data();
  const uint8_t* code = w.code.data();
  const float* cb = w.codebook.data();
  const uint32_t begin = w.row_ptr[r], end = w.row_ptr[r + 1];
  int64_t col = -1;
  float acc0 = 0.f, acc1 = 0.f;
  uint32_t e = begin;
  for (; e + 1 < end; e += 2) {
    const uint8_t d0 = delta[e], d1 = delta[e + 1];
    if ((d0 == 0) | (d1 == 0)) break;  // a filler: rare (gap > 255), handled by the checked loop below
    col += d0;
    acc0 += cb[code[e]] * x[col];
    col += d1;
    acc1 += cb[code[e + 1]] * x[col];
  }
  for (; e < end; ++e) {
    if (delta[e] == 0) {
      col += codec::kSparseFillerStep;
      continue;
    }
    col += delta[e];
    acc0 += cb[code[e]] * x[col];
  }
  return acc0 + acc1;
}

// Batched rows: x transposed into xt[col * kSparseBatchBlock + b], so one weight entry updates
// kSparseBatchBlock outputs with one contiguous load (a single SIMD FMA once vectorised).
__attribute__((always_inline)) inline void SparseRowsBatchedImpl(const SparseMatrix& w, const float* bias,
                                                                 const float* xt, int64_t nb, float* y,
                                                                 int64_t y_stride, Activation act,
                                                                 int64_t r0, int64_t r1) {
  const uint8_t* delta = w.delta.data();
  const uint8_t* code = w.code.data();
  const float* cb = w.codebook.data();
  for (int64_t r = r0; r < r1; ++r) {
    float acc[kSparseBatchBlock] = {};
    int64_t col = -1;
    for (uint32_t e = w.row_ptr[r]; e < w.row_ptr[r + 1]; ++e) {
      if (delta[e] == 0) {
        col += codec::kSparseFillerStep;
        continue;
      }
      col += delta[e];
      const float v = cb[code[e]];
      const float* xc = xt + col * kSparseBatchBlock;
      for (int b = 0; b < kSparseBatchBlock; ++b) acc[b] += v * xc[b];
    }
    const float b0 = bias ? bias[r] : 0.f;
    for (int64_t b = 0; b < nb; ++b) y[b * y_stride + r] = Activate(acc[b] + b0, act);
  }
}

void SparseRowsBatchedGeneric(const SparseMatrix& w, const float* bias, const float* xt, int64_t nb, float* y,
                              int64_t y_stride, Activation act, int64_t r0, int64_t r1) {
  SparseRowsBatchedImpl(w, bias, xt, nb, y, y_stride, act, r0, r1);
}

void SparseRowsBatch1Generic(const SparseMatrix& w, const float* bias, const float* x, float* y, Activation act,
                             int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) y[r] = Activate(SparseRowDot(w, r, x) + (bias ? bias[r] : 0.f), act);
}

__attribute__((always_inline)) inline void DenseRowsImpl(const float* w, int64_t cols, const float* bias,
                                                         const float* x, int64_t batch, int64_t rows, float* y,
                                                         Activation act, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* wr = w + r * cols;
    for (int64_t b = 0; b < batch; ++b) {
      const float* xb = x + b * cols;
      float acc[16] = {};
      int64_t c = 0;
      for (; c + 16 <= cols; c += 16)
        for (int k = 0; k < 16; ++k) acc[k] += wr[c + k] * xb[c + k];
      float sum = 0.f;
      for (; c < cols; ++c) sum += wr[c] * xb[c];
      for (int k = 0; k < 16; ++k) sum += acc[k];
      y[b * rows + r] = Activate(sum + (bias ? bias[r] : 0.f), act);
    }
  }
}

void DenseRowsGeneric(const float* w, int64_t cols, const float* bias, const float* x, int64_t batch,
                      int64_t rows, float* y, Activation act, int64_t r0, int64_t r1) {
  DenseRowsImpl(w, cols, bias, x, batch, rows, y, act, r0, r1);
}

// ---- AVX2 loops ------------------------------------------------------------------------------------
#if DC_HAVE_X86_DISPATCH

bool CpuHasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

__attribute__((target("avx2,fma"))) void SparseRowsBatchedAvx2(const SparseMatrix& w, const float* bias,
                                                               const float* xt, int64_t nb, float* y,
                                                               int64_t y_stride, Activation act, int64_t r0,
                                                               int64_t r1) {
  SparseRowsBatchedImpl(w, bias, xt, nb, y, y_stride, act, r0, r1);
}

__attribute__((target("avx2,fma"))) void DenseRowsAvx2(const float* w, int64_t cols, const float* bias,
                                                       const float* x, int64_t batch, int64_t rows, float* y,
                                                       Activation act, int64_t r0, int64_t r1) {
  DenseRowsImpl(w, cols, bias, x, batch, rows, y, act, r0, r1);
}

// Codebook lookup of 8 codes held in registers: kRegs x 8 centroids, selected with vpermps (low 3 bits)
// and blends on bits 3 and 4. Codebooks of up to 32 entries (5 bits, the paper's FC setting) never touch
// memory; larger ones use a gather.
template <int kRegs>
__attribute__((target("avx2,fma"), always_inline)) inline __m256 LookUp(const __m256* cb, __m256i codes,
                                                                        const float* cb_mem) {
  if constexpr (kRegs == 1) {
    (void)cb_mem;
    return _mm256_permutevar8x32_ps(cb[0], codes);
  } else if constexpr (kRegs == 2) {
    (void)cb_mem;
    const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(codes, 28));
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(cb[0], codes), _mm256_permutevar8x32_ps(cb[1], codes), bit3);
  } else if constexpr (kRegs == 4) {
    (void)cb_mem;
    const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(codes, 28));
    const __m256 bit4 = _mm256_castsi256_ps(_mm256_slli_epi32(codes, 27));
    const __m256 lo =
        _mm256_blendv_ps(_mm256_permutevar8x32_ps(cb[0], codes), _mm256_permutevar8x32_ps(cb[1], codes), bit3);
    const __m256 hi =
        _mm256_blendv_ps(_mm256_permutevar8x32_ps(cb[2], codes), _mm256_permutevar8x32_ps(cb[3], codes), bit3);
    return _mm256_blendv_ps(lo, hi, bit4);
  } else {
    return _mm256_i32gather_ps(cb_mem, codes, 4);
  }
}

// Batch 1: eight entries per step. Column indices come from an in-register prefix sum of the eight
// deltas; x[col] is gathered from L1 (x is at most a few tens of KB); fillers step 255 and are masked out.
template <int kRegs>
__attribute__((target("avx2,fma"))) void SparseRowsBatch1Avx2(const SparseMatrix& w, const float* bias,
                                                              const float* x, float* y, Activation act,
                                                              int64_t r0, int64_t r1) {
  const uint8_t* delta = w.delta.data();
  const uint8_t* code = w.code.data();
  const float* cb_mem = w.codebook.data();
  alignas(32) float padded[32] = {};
  std::memcpy(padded, cb_mem, sizeof(float) * std::min<size_t>(32, w.codebook.size()));
  __m256 cb[4];
  for (int i = 0; i < 4; ++i) cb[i] = _mm256_load_ps(padded + 8 * i);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i filler_step = _mm256_set1_epi32(codec::kSparseFillerStep);
  const __m256i lane3 = _mm256_set1_epi32(3), lane7 = _mm256_set1_epi32(7);
  for (int64_t r = r0; r < r1; ++r) {
    const uint32_t begin = w.row_ptr[r], end = w.row_ptr[r + 1];
    uint32_t e = begin;
    __m256i base = _mm256_set1_epi32(-1);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; e + 16 <= end; e += 16) {
      for (int half = 0; half < 2; ++half) {
        const uint32_t o = e + 8 * half;
        __m256i d = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(delta + o)));
        const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(code + o)));
        const __m256i is_filler = _mm256_cmpeq_epi32(d, zero);
        d = _mm256_blendv_epi8(d, filler_step, is_filler);
        // Inclusive prefix sum of the 8 steps: within each 128-bit half, then carry the low half's total.
        d = _mm256_add_epi32(d, _mm256_slli_si256(d, 4));
        d = _mm256_add_epi32(d, _mm256_slli_si256(d, 8));
        d = _mm256_add_epi32(d, _mm256_blend_epi32(zero, _mm256_permutevar8x32_epi32(d, lane3), 0xF0));
        const __m256i cols = _mm256_add_epi32(base, d);
        base = _mm256_permutevar8x32_epi32(cols, lane7);
        const __m256 xv = _mm256_i32gather_ps(x, cols, 4);
        const __m256 wv = _mm256_andnot_ps(_mm256_castsi256_ps(is_filler), LookUp<kRegs>(cb, c, cb_mem));
        if (half == 0) acc0 = _mm256_fmadd_ps(wv, xv, acc0);
        else acc1 = _mm256_fmadd_ps(wv, xv, acc1);
      }
    }
    __m256 acc = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float sum = _mm_cvtss_f32(s);
    int64_t col = _mm256_extract_epi32(base, 0);
    for (; e < end; ++e) {
      if (delta[e] == 0) {
        col += codec::kSparseFillerStep;
        continue;
      }
      col += delta[e];
      sum += cb_mem[code[e]] * x[col];
    }
    y[r] = Activate(sum + (bias ? bias[r] : 0.f), act);
  }
}

#endif  // DC_HAVE_X86_DISPATCH

void SparseRowsBatch1(const SparseMatrix& w, const float* bias, const float* x, float* y, Activation act,
                      int64_t r0, int64_t r1) {
#if DC_HAVE_X86_DISPATCH
  // Column indices are formed in int32 lanes; wider matrices use the portable loop.
  if (CpuHasAvx2Fma() && w.cols < (int64_t{1} << 30)) {
    const size_t k = w.codebook.size();
    if (k <= 8) return SparseRowsBatch1Avx2<1>(w, bias, x, y, act, r0, r1);
    if (k <= 16) return SparseRowsBatch1Avx2<2>(w, bias, x, y, act, r0, r1);
    if (k <= 32) return SparseRowsBatch1Avx2<4>(w, bias, x, y, act, r0, r1);
    return SparseRowsBatch1Avx2<0>(w, bias, x, y, act, r0, r1);
  }
#endif
  SparseRowsBatch1Generic(w, bias, x, y, act, r0, r1);
}

void SparseRowsBatched(const SparseMatrix& w, const float* bias, const float* xt, int64_t nb, float* y,
                       int64_t y_stride, Activation act, int64_t r0, int64_t r1) {
#if DC_HAVE_X86_DISPATCH
  if (CpuHasAvx2Fma()) return SparseRowsBatchedAvx2(w, bias, xt, nb, y, y_stride, act, r0, r1);
#endif
  SparseRowsBatchedGeneric(w, bias, xt, nb, y, y_stride, act, r0, r1);
}

}  // namespace

bool IsSupportedActivation(int code) { return code >= 0 && code <= static_cast<int>(Activation::kTanh); }

Status ValidateSparseMatrix(const SparseMatrix& w) {
  if (w.rows < 0 || w.cols <= 0) return Status::Error("sparse weights have an empty or negative shape");
  if (w.row_ptr.size() != static_cast<size_t>(w.rows) + 1 || w.row_ptr[0] != 0)
    return Status::Error("sparse weights: row_ptr has the wrong length or does not start at 0");
  if (w.delta.size() != w.code.size() || w.row_ptr.back() != w.delta.size())
    return Status::Error("sparse weights: delta/code lengths disagree with row_ptr");
  if (w.codebook.empty() || w.codebook.size() > 256)
    return Status::Error("sparse weights: codebook must have 1..256 entries, has " +
                         std::to_string(w.codebook.size()));
  for (int64_t r = 0; r < w.rows; ++r) {
    if (w.row_ptr[r + 1] < w.row_ptr[r]) return Status::Error("sparse weights: row_ptr decreases");
    int64_t col = -1;
    for (uint32_t e = w.row_ptr[r]; e < w.row_ptr[r + 1]; ++e) {
      col += w.delta[e] == 0 ? codec::kSparseFillerStep : w.delta[e];
      if (col >= w.cols)
        return Status::Error("sparse weights: row " + std::to_string(r) + " steps past column " +
                             std::to_string(w.cols - 1));
      if (w.code[e] >= w.codebook.size())
        return Status::Error("sparse weights: codebook index out of range in row " + std::to_string(r));
    }
  }
  return Status();
}

void SparseFullyConnected(const SparseMatrix& w, const float* bias, const float* x, int64_t batch, float* y,
                          Activation act, float* scratch, ThreadPool* pool) {
  const int64_t rows = w.rows, cols = w.cols;
  if (batch == 1) {
    ForRowRanges(rows, pool, [&](int64_t r0, int64_t r1) { SparseRowsBatch1(w, bias, x, y, act, r0, r1); });
    return;
  }
  for (int64_t b0 = 0; b0 < batch; b0 += kSparseBatchBlock) {
    const int64_t nb = std::min<int64_t>(kSparseBatchBlock, batch - b0);
    // Transpose this block of inputs; missing batch rows are zero so the fixed-width loop stays exact.
    for (int64_t c = 0; c < cols; ++c) {
      float* dst = scratch + c * kSparseBatchBlock;
      for (int64_t b = 0; b < kSparseBatchBlock; ++b) dst[b] = b < nb ? x[(b0 + b) * cols + c] : 0.f;
    }
    float* yb = y + b0 * rows;
    ForRowRanges(rows, pool, [&](int64_t r0, int64_t r1) {
      SparseRowsBatched(w, bias, scratch, nb, yb, rows, act, r0, r1);
    });
  }
}

void DenseFullyConnected(const float* w, int64_t rows, int64_t cols, const float* bias, const float* x,
                         int64_t batch, float* y, Activation act, ThreadPool* pool) {
  ForRowRanges(rows, pool, [&](int64_t r0, int64_t r1) {
#if DC_HAVE_X86_DISPATCH
    if (CpuHasAvx2Fma()) return DenseRowsAvx2(w, cols, bias, x, batch, rows, y, act, r0, r1);
#endif
    DenseRowsGeneric(w, cols, bias, x, batch, rows, y, act, r0, r1);
  });
}

void SparseFullyConnectedReference(const SparseMatrix& w, const float* bias, const float* x, int64_t batch,
                                   float* y, Activation act) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < w.rows; ++r)
      y[b * w.rows + r] = Activate(SparseRowDot(w, r, x + b * w.cols) + (bias ? bias[r] : 0.f), act);
}

}  // namespace dc::delegate
