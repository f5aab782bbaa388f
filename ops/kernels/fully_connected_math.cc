// Inner loops of DcFullyConnected (sparse P+Q form and the dense fallback), with an AVX2 path chosen at
// run time on x86-64 so that one build runs on every x86-64 machine; other targets use the portable loops,
// which compilers vectorise for their own SIMD (NEON on Android).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/cpu_dispatch.h"
#include "kernels/fully_connected.h"
#include "kernels/row_splitter.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DC_HAVE_X86_DISPATCH 1
#include <immintrin.h>
#else
#define DC_HAVE_X86_DISPATCH 0
#endif

namespace dc::kernels {
namespace {

using codec::SparseMatrix;

// Rows are cheap: split only when every thread gets at least two.
constexpr int64_t kMinRowsPerThread = 2;

#if DC_HAVE_X86_DISPATCH
// The x86-64 clones may use AVX2, FMA and BMI1/2 (every AVX2 CPU, Intel since Haswell and AMD since
// Excavator, has all four). simd::AvxClonesAllowed (DC_KERAS_DISABLE_AVX2=1, or the tests' hook) forces the
// portable loops, so that tests cover what CPUs without them run.
#define DC_AVX2_TARGET __attribute__((target("avx2,fma,bmi,bmi2")))
bool UseAvx2Clones() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  return has && simd::AvxClonesAllowed();
}
#endif

// ---- one row at batch 1: RowDot(form, r, x) ------------------------------------------------------------

// Delta/code walk: the loop of the codec's contract, with two accumulators to halve the floating-point
// dependency chain. An AVX2 version built on vpgatherdps (x[col] and the codebook) measured 5x slower on
// AMD Zen 3, where gathers are microcoded.
__attribute__((always_inline)) inline float RowDot(const SparseMatrix& w, int64_t r, const float* x) {
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

// One chunk's sum of x over its kChunkSize columns. On little-endian targets the four uint16 columns come
// in two 32-bit loads split by one shift each: the loop is bound by loads and by the shifts that split them,
// and this balance measured 5-8% faster on the 4096x4096 layer than one 64-bit load split by three shifts
// (which itself beat four 16-bit loads by 11%).
__attribute__((always_inline)) inline float ChunkSum(const uint16_t* c, const float* xz) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  static_assert(kChunkSize == 4, "ChunkSum splits two 32-bit words into four columns");
  uint32_t lo, hi;
  std::memcpy(&lo, c, sizeof lo);
  std::memcpy(&hi, c + 2, sizeof hi);
  return (xz[lo & 0xFFFF] + xz[lo >> 16]) + (xz[hi & 0xFFFF] + xz[hi >> 16]);
#else
  return (xz[c[0]] + xz[c[1]]) + (xz[c[2]] + xz[c[3]]);
#endif
}

// Chunked: xz is x followed by the zero slot that padding columns read. Four accumulators: with fewer, the
// chain of multiply-adds into one accumulator, not the loads, bounds short rows.
__attribute__((always_inline)) inline float RowDot(const ChunkedMatrix& w, int64_t r, const float* xz) {
  // Indices, not pointers compared past the row's end: the vectors of an all-zero layer are empty (null
  // data()), and even `p + 3` beyond one-past-the-end is undefined.
  const uint16_t* col = w.col.data();
  const float* cb = w.codebook.data();
  const uint8_t* code = w.code.data();
  size_t e = w.row_ptr[r];
  const size_t end = w.row_ptr[r + 1];
  float acc0 = 0.f, acc1 = 0.f, acc2 = 0.f, acc3 = 0.f;
  for (; e + 4 <= end; e += 4) {
    const uint16_t* c = col + e * kChunkSize;
    acc0 += cb[code[e]] * ChunkSum(c, xz);
    acc1 += cb[code[e + 1]] * ChunkSum(c + kChunkSize, xz);
    acc2 += cb[code[e + 2]] * ChunkSum(c + 2 * kChunkSize, xz);
    acc3 += cb[code[e + 3]] * ChunkSum(c + 3 * kChunkSize, xz);
  }
  for (; e < end; ++e) acc0 += cb[code[e]] * ChunkSum(col + e * kChunkSize, xz);
  return (acc0 + acc1) + (acc2 + acc3);
}

// Pairs, portable: compilers turn the two adjacent weight loads into one (ldp on arm64). The x86-64 AVX2
// build uses RowsBatch1Avx2<PairMatrix> below instead.
__attribute__((always_inline)) inline float RowDot(const PairMatrix& w, int64_t r, const float* xz) {
  const float* pw = w.pair_weights.data();
  const unsigned a_shift = w.col_a_shift(), b_shift = w.col_b_shift();
  const uint32_t code_mask = w.pair_code_mask(), col_mask = w.col_mask();
  float acc0 = 0.f, acc1 = 0.f;
  const uint32_t* pair = w.pair.data();
  for (size_t i = w.row_ptr[r], end = w.row_ptr[r + 1]; i < end; ++i) {
    const uint32_t p = pair[i];
    const float* wt = pw + 2 * size_t{p & code_mask};
    acc0 += xz[(p >> a_shift) & col_mask] * wt[0];
    acc1 += xz[p >> b_shift] * wt[1];
  }
  return acc0 + acc1;
}

// ---- one row at batch > 1: AddRowBatched(form, r, xt, acc) ---------------------------------------------
// x is transposed into xt[col * kSparseBatchBlock + b] (the padded forms' zero slot included), so one
// weight entry updates kSparseBatchBlock outputs with contiguous loads.
//
// The kSparseBatchBlock lanes are one GCC/Clang vector: one 256-bit FMA in the AVX2 clone, two 128-bit ops
// elsewhere (SSE, NEON). Written as a plain per-lane loop, -O3 unrolled it before vectorising once these
// helpers were inlined into the templates and left it scalar with shuffles: 2.5x slower at batch 16.
typedef float BatchLanes __attribute__((vector_size(kSparseBatchBlock * sizeof(float))));

// An out-parameter: returning a 256-bit vector by value from code built without AVX draws GCC's and Clang's
// ABI warning (-Wpsabi) at every call.
__attribute__((always_inline)) inline void LoadLanes(const float* p, BatchLanes* v) { std::memcpy(v, p, sizeof *v); }

__attribute__((always_inline)) inline void AddRowBatched(const SparseMatrix& w, int64_t r, const float* xt,
                                                         BatchLanes& acc) {
  const float* cb = w.codebook.data();
  w.ForEachEntry(r, [&](int64_t col, uint8_t code) {
    BatchLanes xc;
    LoadLanes(xt + col * kSparseBatchBlock, &xc);
    acc += cb[code] * xc;
  });
}

__attribute__((always_inline)) inline void AddRowBatched(const ChunkedMatrix& w, int64_t r, const float* xt,
                                                         BatchLanes& acc) {
  const uint16_t* col = w.col.data();
  const uint8_t* code = w.code.data();
  const float* cb = w.codebook.data();
  for (uint32_t i = w.row_ptr[r]; i < w.row_ptr[r + 1]; ++i) {
    const uint16_t* c = col + size_t{i} * kChunkSize;
    const float v = cb[code[i]];
    const float *x0 = xt + size_t{c[0]} * kSparseBatchBlock, *x1 = xt + size_t{c[1]} * kSparseBatchBlock,
                *x2 = xt + size_t{c[2]} * kSparseBatchBlock, *x3 = xt + size_t{c[3]} * kSparseBatchBlock;
    BatchLanes l0, l1, l2, l3;
    LoadLanes(x0, &l0);
    LoadLanes(x1, &l1);
    LoadLanes(x2, &l2);
    LoadLanes(x3, &l3);
    acc += v * ((l0 + l1) + (l2 + l3));
  }
}

__attribute__((always_inline)) inline void AddRowBatched(const PairMatrix& w, int64_t r, const float* xt,
                                                         BatchLanes& acc) {
  const float* pw = w.pair_weights.data();
  const unsigned a_shift = w.col_a_shift(), b_shift = w.col_b_shift();
  const uint32_t code_mask = w.pair_code_mask(), col_mask = w.col_mask();
  for (uint32_t i = w.row_ptr[r]; i < w.row_ptr[r + 1]; ++i) {
    const uint32_t p = w.pair[i];
    const float wa = pw[2 * size_t{p & code_mask}], wb = pw[2 * size_t{p & code_mask} + 1];
    const float* xa = xt + size_t{(p >> a_shift) & col_mask} * kSparseBatchBlock;
    const float* xb = xt + size_t{p >> b_shift} * kSparseBatchBlock;
    BatchLanes la, lb;
    LoadLanes(xa, &la);
    LoadLanes(xb, &lb);
    acc += wa * la + wb * lb;
  }
}

// ---- rows of any form, compiled twice ---------------------------------------------------------------
// Each *Impl is instantiated once for baseline x86-64 (or the build's own target elsewhere) and once with
// AVX2+FMA on x86-64; RowsBatch1 / RowsBatched pick one at run time, so one build runs on every x86-64 CPU.

template <typename Weights>
__attribute__((always_inline)) inline void RowsBatch1Impl(const Weights& w, const float* bias, const float* x,
                                                          float* y, Activation act, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) y[r] = Activate(RowDot(w, r, x) + (bias ? bias[r] : 0.f), act);
}

template <typename Weights>
__attribute__((always_inline)) inline void RowsBatchedImpl(const Weights& w, const float* bias, const float* xt,
                                                           int64_t nb, float* y, int64_t y_stride,
                                                           Activation act, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    BatchLanes acc = {};
    AddRowBatched(w, r, xt, acc);
    const float b0 = bias ? bias[r] : 0.f;
    for (int64_t b = 0; b < nb; ++b) y[b * y_stride + r] = Activate(acc[b] + b0, act);
  }
}

template <typename Weights>
void RowsBatch1Generic(const Weights& w, const float* bias, const float* x, float* y, Activation act, int64_t r0,
                       int64_t r1) {
  RowsBatch1Impl(w, bias, x, y, act, r0, r1);
}

template <typename Weights>
void RowsBatchedGeneric(const Weights& w, const float* bias, const float* xt, int64_t nb, float* y,
                        int64_t y_stride, Activation act, int64_t r0, int64_t r1) {
  RowsBatchedImpl(w, bias, xt, nb, y, y_stride, act, r0, r1);
}

#if DC_HAVE_X86_DISPATCH
template <typename Weights>
DC_AVX2_TARGET void RowsBatch1Avx2(const Weights& w, const float* bias, const float* x, float* y, Activation act,
                                   int64_t r0, int64_t r1) {
  RowsBatch1Impl(w, bias, x, y, act, r0, r1);
}

// One pair = two x loads merged into one vector and one 8-byte load of both weights, multiplied in a
// single FMA; the compiler's own version of the portable loop spends two extra loads per pair. The fields
// come out with AND / BEXTR / SHRX (one op each, no shift count in CL).
struct PairFieldsAvx2 {
  const float* xz;
  const float* pw;
  unsigned a_shift, col_bits, b_shift;
  uint32_t code_mask;
};

DC_AVX2_TARGET inline __m128 PairTerm(uint32_t p, const PairFieldsAvx2& f, __m128 acc) {
  const __m128 xs = _mm_insert_ps(_mm_load_ss(f.xz + _bextr_u32(p, f.a_shift, f.col_bits)),
                                  _mm_load_ss(f.xz + (p >> f.b_shift)), 0x10);
  double both;
  std::memcpy(&both, f.pw + 2 * size_t{p & f.code_mask}, sizeof both);
  return _mm_fmadd_ps(xs, _mm_castpd_ps(_mm_set_sd(both)), acc);
}

// Four accumulators: with two, the FMA latency chain and not the loads bounds the loop (2-3% on LeNet).
template <>
DC_AVX2_TARGET void RowsBatch1Avx2<PairMatrix>(const PairMatrix& w, const float* bias, const float* xz, float* y,
                                               Activation act, int64_t r0, int64_t r1) {
  const PairFieldsAvx2 f{xz, w.pair_weights.data(), w.col_a_shift(), static_cast<unsigned>(w.col_bits),
                         w.col_b_shift(), w.pair_code_mask()};
  for (int64_t r = r0; r < r1; ++r) {
    __m128 acc0 = _mm_setzero_ps(), acc1 = _mm_setzero_ps(), acc2 = _mm_setzero_ps(), acc3 = _mm_setzero_ps();
    // Indices, not `p + 3 < end`: an all-zero layer has no pairs (null data()), and a pointer beyond
    // one-past-the-end is undefined even when never read.
    const uint32_t* pair = w.pair.data();
    size_t i = w.row_ptr[r];
    const size_t end = w.row_ptr[r + 1];
    for (; i + 4 <= end; i += 4) {
      acc0 = PairTerm(pair[i], f, acc0);
      acc1 = PairTerm(pair[i + 1], f, acc1);
      acc2 = PairTerm(pair[i + 2], f, acc2);
      acc3 = PairTerm(pair[i + 3], f, acc3);
    }
    if (i + 2 <= end) {
      acc0 = PairTerm(pair[i], f, acc0);
      acc1 = PairTerm(pair[i + 1], f, acc1);
      i += 2;
    }
    if (i < end) acc2 = PairTerm(pair[i], f, acc2);
    const __m128 acc = _mm_add_ps(_mm_add_ps(acc0, acc1), _mm_add_ps(acc2, acc3));
    const float dot = _mm_cvtss_f32(acc) + _mm_cvtss_f32(_mm_movehdup_ps(acc));
    y[r] = Activate(dot + (bias ? bias[r] : 0.f), act);
  }
}

template <typename Weights>
DC_AVX2_TARGET void RowsBatchedAvx2(const Weights& w, const float* bias, const float* xt, int64_t nb, float* y,
                                    int64_t y_stride, Activation act, int64_t r0, int64_t r1) {
  RowsBatchedImpl(w, bias, xt, nb, y, y_stride, act, r0, r1);
}
#endif  // DC_HAVE_X86_DISPATCH

template <typename Weights>
void RowsBatch1(const Weights& w, const float* bias, const float* x, float* y, Activation act, int64_t r0,
                int64_t r1) {
#if DC_HAVE_X86_DISPATCH
  if (UseAvx2Clones()) return RowsBatch1Avx2(w, bias, x, y, act, r0, r1);
#endif
  RowsBatch1Generic(w, bias, x, y, act, r0, r1);
}

template <typename Weights>
void RowsBatched(const Weights& w, const float* bias, const float* xt, int64_t nb, float* y, int64_t y_stride,
                 Activation act, int64_t r0, int64_t r1) {
#if DC_HAVE_X86_DISPATCH
  if (UseAvx2Clones()) return RowsBatchedAvx2(w, bias, xt, nb, y, y_stride, act, r0, r1);
#endif
  RowsBatchedGeneric(w, bias, xt, nb, y, y_stride, act, r0, r1);
}

// ---- drivers ------------------------------------------------------------------------------------------

// Batch rows b0..b0+nb transposed into xt[col * kSparseBatchBlock + b], plus (for the padded forms) the zero
// slot's row; missing batch rows are zero so the fixed-width loops stay exact.
void TransposeBlock(const float* x, int64_t cols, int64_t b0, int64_t nb, bool zero_slot, float* xt) {
  for (int64_t c = 0; c < cols + (zero_slot ? 1 : 0); ++c) {
    float* dst = xt + c * kSparseBatchBlock;
    for (int64_t b = 0; b < kSparseBatchBlock; ++b) dst[b] = (b < nb && c < cols) ? x[(b0 + b) * cols + c] : 0.f;
  }
}

// y = act(x W^T + b) for any form. The padded forms (chunked, pairs) read x through a copy with the zero
// slot appended; the walk reads x in place at batch 1.
template <typename Weights>
void FormFullyConnected(const Weights& w, bool zero_slot, const float* bias, const float* x, int64_t batch,
                        float* y, Activation act, float* scratch, RowSplitter* pool) {
  const int64_t rows = w.rows, cols = w.cols;
  if (batch == 1) {
    const float* xz = x;
    if (zero_slot) {
      std::memcpy(scratch, x, sizeof(float) * static_cast<size_t>(cols));
      scratch[cols] = 0.f;
      xz = scratch;
    }
    SplitRows(pool, rows, kMinRowsPerThread,
              [&](int64_t r0, int64_t r1) { RowsBatch1(w, bias, xz, y, act, r0, r1); });
    return;
  }
  for (int64_t b0 = 0; b0 < batch; b0 += kSparseBatchBlock) {
    const int64_t nb = std::min<int64_t>(kSparseBatchBlock, batch - b0);
    TransposeBlock(x, cols, b0, nb, zero_slot, scratch);
    float* yb = y + b0 * rows;
    SplitRows(pool, rows, kMinRowsPerThread, [&](int64_t r0, int64_t r1) {
      RowsBatched(w, bias, scratch, nb, yb, rows, act, r0, r1);
    });
  }
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

#if DC_HAVE_X86_DISPATCH
DC_AVX2_TARGET void DenseRowsAvx2(const float* w, int64_t cols, const float* bias, const float* x, int64_t batch,
                                  int64_t rows, float* y, Activation act, int64_t r0, int64_t r1) {
  DenseRowsImpl(w, cols, bias, x, batch, rows, y, act, r0, r1);
}
#endif

}  // namespace

bool FullyConnectedUsesAvx2() {
#if DC_HAVE_X86_DISPATCH
  return UseAvx2Clones();
#else
  return false;
#endif
}

size_t ChunkedScratchFloats(int64_t cols, int64_t batch) {
  return static_cast<size_t>(cols + 1) * (batch > 1 ? kSparseBatchBlock : 1);
}

void ChunkedFullyConnected(const ChunkedMatrix& w, const float* bias, const float* x, int64_t batch, float* y,
                           Activation act, float* scratch, RowSplitter* pool) {
  FormFullyConnected(w, /*zero_slot=*/true, bias, x, batch, y, act, scratch, pool);
}

size_t PairScratchFloats(int64_t cols, int64_t batch) { return ChunkedScratchFloats(cols, batch); }

void PairFullyConnected(const PairMatrix& w, const float* bias, const float* x, int64_t batch, float* y,
                        Activation act, float* scratch, RowSplitter* pool) {
  FormFullyConnected(w, /*zero_slot=*/true, bias, x, batch, y, act, scratch, pool);
}

void SparseFullyConnected(const SparseMatrix& w, const float* bias, const float* x, int64_t batch, float* y,
                          Activation act, float* scratch, RowSplitter* pool) {
  FormFullyConnected(w, /*zero_slot=*/false, bias, x, batch, y, act, scratch, pool);
}

void DenseFullyConnected(const float* w, int64_t rows, int64_t cols, const float* bias, const float* x,
                         int64_t batch, float* y, Activation act, RowSplitter* pool) {
  SplitRows(pool, rows, kMinRowsPerThread, [&](int64_t r0, int64_t r1) {
#if DC_HAVE_X86_DISPATCH
    if (UseAvx2Clones()) return DenseRowsAvx2(w, cols, bias, x, batch, rows, y, act, r0, r1);
#endif
    DenseRowsGeneric(w, cols, bias, x, batch, rows, y, act, r0, r1);
  });
}

void SparseFullyConnectedReference(const SparseMatrix& w, const float* bias, const float* x, int64_t batch,
                                   float* y, Activation act) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < w.rows; ++r)
      y[b * w.rows + r] = Activate(RowDot(w, r, x + b * w.cols) + (bias ? bias[r] : 0.f), act);
}

size_t FullyConnectedWeights::ScratchFloats(int64_t batch) const {
  switch (form_) {
    case Form::kBlock: return block_.ScratchFloats(batch);
    case Form::kChunked: return ChunkedScratchFloats(cols_, batch);
    case Form::kPair: return PairScratchFloats(cols_, batch);
    case Form::kWalk: break;
  }
  return batch > 1 ? static_cast<size_t>(cols_) * kSparseBatchBlock : 0;
}

void FullyConnectedWeights::Run(const float* bias, const float* x, int64_t batch, float* y, Activation act,
                                float* scratch, RowSplitter* pool) const {
  switch (form_) {
    case Form::kBlock: return block_.Run(bias, x, batch, y, act, scratch, pool);
    case Form::kChunked: return ChunkedFullyConnected(chunked_, bias, x, batch, y, act, scratch, pool);
    case Form::kPair: return PairFullyConnected(pairs_, bias, x, batch, y, act, scratch, pool);
    case Form::kWalk: break;
  }
  SparseFullyConnected(walk_, bias, x, batch, y, act, scratch, pool);
}

}  // namespace dc::kernels
