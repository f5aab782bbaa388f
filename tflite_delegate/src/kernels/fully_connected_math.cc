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
#else
#define DC_HAVE_X86_DISPATCH 0
#endif

namespace dc::delegate {
namespace {

using codec::SparseMatrix;

// Rows are cheap: split only when every thread gets at least two.
template <typename Fn>
void ForRowRanges(int64_t rows, ThreadPool* pool, const Fn& fn) {
  ParallelForRanges(rows, pool, /*min_rows_per_thread=*/2, fn);
}

// ---- portable loops -------------------------------------------------------------------------------

// One row, one input vector: the loop of the codec's contract, with two accumulators to halve the
// floating-point dependency chain. (Reading deltas and codes as 64-bit words and splitting them with shifts
// measured no faster on Zen 3: the loop is bound by the x[col] and centroid loads.)
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

#endif  // DC_HAVE_X86_DISPATCH

// Batch 1 stays scalar on purpose: an AVX2 version built on vpgatherdps (x[col] and the codebook) measured
// 5x slower than this loop on AMD Zen 3, where gathers are microcoded; the scalar loop is bound by its four
// L1 loads per entry (delta, code, centroid, x[col]).
void SparseRowsBatch1(const SparseMatrix& w, const float* bias, const float* x, float* y, Activation act,
                      int64_t r0, int64_t r1) {
  SparseRowsBatch1Generic(w, bias, x, y, act, r0, r1);
}

void SparseRowsBatched(const SparseMatrix& w, const float* bias, const float* xt, int64_t nb, float* y,
                       int64_t y_stride, Activation act, int64_t r0, int64_t r1) {
#if DC_HAVE_X86_DISPATCH
  if (CpuHasAvx2Fma()) return SparseRowsBatchedAvx2(w, bias, xt, nb, y, y_stride, act, r0, r1);
#endif
  SparseRowsBatchedGeneric(w, bias, xt, nb, y, y_stride, act, r0, r1);
}

// ---- chunked form ---------------------------------------------------------------------------------

// One chunk's sum of x over its kChunkSize columns. On little-endian targets the four uint16 columns come
// in one 64-bit load split by shifts: the loop is bound by loads, and this measured 11% faster than four
// 16-bit loads on the 4096x4096 layer.
__attribute__((always_inline)) inline float ChunkSum(const uint16_t* c, const float* xz) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  static_assert(kChunkSize == 4, "ChunkSum splits one 64-bit word into four columns");
  uint64_t packed;
  std::memcpy(&packed, c, sizeof(packed));
  return (xz[packed & 0xFFFF] + xz[(packed >> 16) & 0xFFFF]) + (xz[(packed >> 32) & 0xFFFF] + xz[packed >> 48]);
#else
  return (xz[c[0]] + xz[c[1]]) + (xz[c[2]] + xz[c[3]]);
#endif
}

// xz: x followed by the zero slot that padding columns read.
__attribute__((always_inline)) inline float ChunkedRowDot(const ChunkedMatrix& w, int64_t r, const float* xz) {
  const uint16_t* col = w.col.data();
  const uint8_t* code = w.code.data();
  const float* cb = w.codebook.data();
  const uint32_t end = w.row_ptr[r + 1];
  float acc0 = 0.f, acc1 = 0.f;
  uint32_t i = w.row_ptr[r];
  for (; i + 1 < end; i += 2) {
    const uint16_t* c = col + size_t{i} * kChunkSize;
    acc0 += cb[code[i]] * ChunkSum(c, xz);
    acc1 += cb[code[i + 1]] * ChunkSum(c + kChunkSize, xz);
  }
  if (i < end) acc0 += cb[code[i]] * ChunkSum(col + size_t{i} * kChunkSize, xz);
  return acc0 + acc1;
}

// Batched: xt[col * kSparseBatchBlock + b] (zero slot included); one chunk updates every batch row.
__attribute__((always_inline)) inline void ChunkedRowsBatchedImpl(const ChunkedMatrix& w, const float* bias,
                                                                  const float* xt, int64_t nb, float* y,
                                                                  int64_t y_stride, Activation act, int64_t r0,
                                                                  int64_t r1) {
  const uint16_t* col = w.col.data();
  const uint8_t* code = w.code.data();
  const float* cb = w.codebook.data();
  for (int64_t r = r0; r < r1; ++r) {
    float acc[kSparseBatchBlock] = {};
    for (uint32_t i = w.row_ptr[r]; i < w.row_ptr[r + 1]; ++i) {
      const uint16_t* c = col + size_t{i} * kChunkSize;
      const float v = cb[code[i]];
      const float *x0 = xt + size_t{c[0]} * kSparseBatchBlock, *x1 = xt + size_t{c[1]} * kSparseBatchBlock,
                  *x2 = xt + size_t{c[2]} * kSparseBatchBlock, *x3 = xt + size_t{c[3]} * kSparseBatchBlock;
      for (int b = 0; b < kSparseBatchBlock; ++b) acc[b] += v * ((x0[b] + x1[b]) + (x2[b] + x3[b]));
    }
    const float b0 = bias ? bias[r] : 0.f;
    for (int64_t b = 0; b < nb; ++b) y[b * y_stride + r] = Activate(acc[b] + b0, act);
  }
}

void ChunkedRowsBatchedGeneric(const ChunkedMatrix& w, const float* bias, const float* xt, int64_t nb, float* y,
                               int64_t y_stride, Activation act, int64_t r0, int64_t r1) {
  ChunkedRowsBatchedImpl(w, bias, xt, nb, y, y_stride, act, r0, r1);
}

#if DC_HAVE_X86_DISPATCH
__attribute__((target("avx2,fma"))) void ChunkedRowsBatchedAvx2(const ChunkedMatrix& w, const float* bias,
                                                                const float* xt, int64_t nb, float* y,
                                                                int64_t y_stride, Activation act, int64_t r0,
                                                                int64_t r1) {
  ChunkedRowsBatchedImpl(w, bias, xt, nb, y, y_stride, act, r0, r1);
}
#endif

void ChunkedRowsBatched(const ChunkedMatrix& w, const float* bias, const float* xt, int64_t nb, float* y,
                        int64_t y_stride, Activation act, int64_t r0, int64_t r1) {
#if DC_HAVE_X86_DISPATCH
  if (CpuHasAvx2Fma()) return ChunkedRowsBatchedAvx2(w, bias, xt, nb, y, y_stride, act, r0, r1);
#endif
  ChunkedRowsBatchedGeneric(w, bias, xt, nb, y, y_stride, act, r0, r1);
}

}  // namespace

size_t ChunkedMatrix::ResidentBytes() const {
  return row_ptr.capacity() * sizeof(uint32_t) + col.capacity() * sizeof(uint16_t) + code.capacity() +
         codebook.capacity() * sizeof(float);
}

bool ChunkedMatrix::Pays() const {
  return nonzeros > 0 && static_cast<double>(col.size()) <= kMaxChunkPadding * static_cast<double>(nonzeros);
}

Status BuildChunkedMatrix(const SparseMatrix& w, ChunkedMatrix* out) {
  if (w.cols <= 0 || w.cols >= 0xFFFF)
    return Status::Error("sparse weights have " + std::to_string(w.cols) + " columns; the chunked form needs < 65535");
  const size_t ncodes = w.codebook.size();
  ChunkedMatrix m;
  m.rows = w.rows;
  m.cols = w.cols;
  m.codebook = w.codebook;
  m.row_ptr.reserve(static_cast<size_t>(w.rows) + 1);
  m.row_ptr.push_back(0);
  const size_t approx_chunks = w.delta.size() / kChunkSize + static_cast<size_t>(w.rows) * ncodes / 2;
  m.col.reserve(approx_chunks * kChunkSize);
  m.code.reserve(approx_chunks);
  std::vector<uint32_t> count(ncodes), fill(ncodes);
  std::vector<uint16_t> grouped;
  for (int64_t r = 0; r < w.rows; ++r) {
    std::fill(count.begin(), count.end(), 0u);
    for (uint32_t e = w.row_ptr[r]; e < w.row_ptr[r + 1]; ++e)
      if (w.delta[e] != 0) ++count[w.code[e]];
    uint32_t total = 0;
    for (size_t k = 0; k < ncodes; ++k) {
      m.nonzeros += count[k];
      fill[k] = total;
      total += (count[k] + kChunkSize - 1) / kChunkSize * kChunkSize;
    }
    grouped.assign(total, static_cast<uint16_t>(w.cols));  // padding reads the zero slot
    int64_t c = -1;
    for (uint32_t e = w.row_ptr[r]; e < w.row_ptr[r + 1]; ++e) {
      if (w.delta[e] == 0) {
        c += codec::kSparseFillerStep;
        continue;
      }
      c += w.delta[e];
      grouped[fill[w.code[e]]++] = static_cast<uint16_t>(c);
    }
    m.col.insert(m.col.end(), grouped.begin(), grouped.end());
    for (size_t k = 0; k < ncodes; ++k)
      for (uint32_t n = 0; n < (count[k] + kChunkSize - 1) / kChunkSize; ++n) m.code.push_back(static_cast<uint8_t>(k));
    if (m.code.size() > UINT32_MAX) return Status::Error("sparse weights are too large for the chunked form");
    m.row_ptr.push_back(static_cast<uint32_t>(m.code.size()));
  }
  m.col.shrink_to_fit();
  m.code.shrink_to_fit();
  *out = std::move(m);
  return Status();
}

size_t ChunkedScratchFloats(int64_t cols, int64_t batch) {
  return static_cast<size_t>(cols + 1) * (batch > 1 ? kSparseBatchBlock : 1);
}

void ChunkedFullyConnected(const ChunkedMatrix& w, const float* bias, const float* x, int64_t batch, float* y,
                           Activation act, float* scratch, ThreadPool* pool) {
  const int64_t rows = w.rows, cols = w.cols;
  if (batch == 1) {
    std::memcpy(scratch, x, sizeof(float) * static_cast<size_t>(cols));
    scratch[cols] = 0.f;
    ForRowRanges(rows, pool, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        y[r] = Activate(ChunkedRowDot(w, r, scratch) + (bias ? bias[r] : 0.f), act);
    });
    return;
  }
  for (int64_t b0 = 0; b0 < batch; b0 += kSparseBatchBlock) {
    const int64_t nb = std::min<int64_t>(kSparseBatchBlock, batch - b0);
    // Transposed block plus the zero slot's row; missing batch rows are zero so the fixed-width loop is exact.
    for (int64_t c = 0; c <= cols; ++c) {
      float* dst = scratch + c * kSparseBatchBlock;
      for (int64_t b = 0; b < kSparseBatchBlock; ++b) dst[b] = (b < nb && c < cols) ? x[(b0 + b) * cols + c] : 0.f;
    }
    float* yb = y + b0 * rows;
    ForRowRanges(rows, pool, [&](int64_t r0, int64_t r1) {
      ChunkedRowsBatched(w, bias, scratch, nb, yb, rows, act, r0, r1);
    });
  }
}

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
