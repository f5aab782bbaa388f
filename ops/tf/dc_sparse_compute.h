// Compute kernels over the codec's decoded sparse form (dc::codec::SparseMatrix), free of TensorFlow.
//
// Why a separate header: the hot loops are plain C++ over validated arrays, so they can be reasoned about
// (and reused by other front ends) without TensorFlow's types. The TF kernels in dc_tf_ops.cc own the
// caching, threading and error reporting and call into these functions per shard of rows / ids.
//
// Safety contract: every function here except ValidateSparse assumes its SparseMatrix passed
// ValidateSparse, which proves every array access the loops make is in bounds. The loops therefore carry
// no per-entry bounds checks, and a corrupt blob can never make them read or write out of bounds.
#ifndef DC_KERAS_OPS_TF_DC_SPARSE_COMPUTE_H_
#define DC_KERAS_OPS_TF_DC_SPARSE_COMPUTE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "dc_codec.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

namespace dc {
namespace tfops {

// A row's column cursor starts at -1 and each entry steps it by `delta`; delta 0 is a filler that
// steps by kFillerStep and contributes nothing (it lets gaps longer than 255 be encoded in uint8).
constexpr int64_t kFillerStep = codec::kSparseFillerStep;

// Checks that `m` is internally consistent so that the compute loops below never index out of bounds.
// Returns an empty string when valid, else a description of the first problem found.
inline std::string ValidateSparse(const codec::SparseMatrix& m) {
  if (m.rows < 0 || m.cols < 0) return "negative matrix dimensions";
  if (m.row_ptr.size() != static_cast<size_t>(m.rows) + 1) {
    return "row_ptr has " + std::to_string(m.row_ptr.size()) + " entries, expected rows+1 = " +
           std::to_string(m.rows + 1);
  }
  if (m.delta.size() != m.code.size()) return "delta and code streams differ in length";
  if (m.row_ptr[0] != 0) return "row_ptr[0] is not 0";
  if (m.row_ptr.back() != m.delta.size()) return "row_ptr[rows] does not match the entry count";
  if (m.codebook.empty() && !m.delta.empty()) return "empty codebook with non-empty entries";
  const size_t codebook_size = m.codebook.size();
  for (int64_t r = 0; r < m.rows; ++r) {
    const uint32_t begin = m.row_ptr[r], end = m.row_ptr[r + 1];
    if (end < begin) return "row_ptr is not monotonic at row " + std::to_string(r);
    int64_t col = -1;
    for (uint32_t e = begin; e < end; ++e) {
      const uint8_t d = m.delta[e];
      if (d == 0) {
        col += kFillerStep;
        // A filler may overshoot only if nothing follows it in the row; bound it anyway so the
        // cursor cannot overflow on a pathological row made of fillers.
        if (col >= m.cols + kFillerStep) return "filler run past the end of row " + std::to_string(r);
        continue;
      }
      col += d;
      if (col >= m.cols) {
        return "column " + std::to_string(col) + " out of range [0, " + std::to_string(m.cols) +
               ") in row " + std::to_string(r);
      }
      if (m.code[e] >= codebook_size) {
        return "codebook index " + std::to_string(m.code[e]) + " out of range (codebook has " +
               std::to_string(codebook_size) + " entries) in row " + std::to_string(r);
      }
    }
  }
  return std::string();
}

// y[r] = sum_e codebook[code[e]] * x[col(e)] for rows [row_begin, row_end): batch 1.
// Four accumulators break the floating-point add dependency chain, which otherwise bounds the loop at
// one entry per FMA latency (about 4 cycles) rather than by memory traffic.
inline void SparseMatVecRows(const codec::SparseMatrix& m, const float* x, float* y, int64_t row_begin,
                             int64_t row_end) {
  const uint8_t* delta = m.delta.data();
  const uint8_t* code = m.code.data();
  const float* codebook = m.codebook.data();
  for (int64_t r = row_begin; r < row_end; ++r) {
    size_t e = m.row_ptr[r];
    const size_t end = m.row_ptr[r + 1];
    int64_t col = -1;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (; e + 4 <= end; e += 4) {
      for (int k = 0; k < 4; ++k) {
        const uint8_t d = delta[e + k];
        if (d == 0) {
          col += kFillerStep;
          continue;
        }
        col += d;
        acc[k] += codebook[code[e + k]] * x[col];
      }
    }
    for (; e < end; ++e) {
      const uint8_t d = delta[e];
      if (d == 0) {
        col += kFillerStep;
        continue;
      }
      col += d;
      acc[0] += codebook[code[e]] * x[col];
    }
    y[r] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  }
}

// Batched rows with a compile-time batch tile width W (a multiple of 4): xt is x transposed to [cols, W]
// (zero padded past `valid`), so each entry reads W contiguous floats. y is [batch, rows] with row stride
// `y_stride`; only the first `valid` batch columns of the tile are written.
//
// Written with GCC/Clang generic 4-float vectors (SSE on baseline x86-64, NEON on ARM): the plain
// `acc[b] += w * xr[b]` loop is not vectorised by GCC 12 here and runs ten times slower.
template <int W>
inline void SparseMatMulTileRows(const codec::SparseMatrix& m, const float* xt, int valid, float* y,
                                 int64_t y_stride, int64_t row_begin, int64_t row_end) {
  static_assert(W % 4 == 0, "tile width must be a multiple of 4");
  const uint8_t* delta = m.delta.data();
  const uint8_t* code = m.code.data();
  const float* codebook = m.codebook.data();
#if defined(__GNUC__) || defined(__clang__)
  typedef float Vec4 __attribute__((vector_size(16)));
  constexpr int V = W / 4;
  for (int64_t r = row_begin; r < row_end; ++r) {
    Vec4 acc[V];
    for (int v = 0; v < V; ++v) acc[v] = Vec4{0.f, 0.f, 0.f, 0.f};
    int64_t col = -1;
    const size_t end = m.row_ptr[r + 1];
    for (size_t e = m.row_ptr[r]; e < end; ++e) {
      const uint8_t d = delta[e];
      if (d == 0) {
        col += kFillerStep;
        continue;
      }
      col += d;
      const float w = codebook[code[e]];
      const float* xr = xt + col * W;
      for (int v = 0; v < V; ++v) {
        Vec4 xv;
        std::memcpy(&xv, xr + 4 * v, sizeof(xv));  // unaligned-safe load
        acc[v] += w * xv;
      }
    }
    alignas(16) float out[W];
    std::memcpy(out, acc, sizeof(out));
    for (int b = 0; b < valid; ++b) y[b * y_stride + r] = out[b];
  }
#else
  for (int64_t r = row_begin; r < row_end; ++r) {
    float acc[W] = {};
    int64_t col = -1;
    const size_t end = m.row_ptr[r + 1];
    for (size_t e = m.row_ptr[r]; e < end; ++e) {
      const uint8_t d = delta[e];
      if (d == 0) {
        col += kFillerStep;
        continue;
      }
      col += d;
      const float w = codebook[code[e]];
      const float* xr = xt + col * W;
      for (int b = 0; b < W; ++b) acc[b] += w * xr[b];
    }
    for (int b = 0; b < valid; ++b) y[b * y_stride + r] = acc[b];
  }
#endif
}

// Tile widths used for batches > 1, widest first: a batch is cut into tiles of 16 and the remainder goes
// to the narrowest width that holds it, so padding wastes at most a few lanes.
inline int TileWidthFor(int64_t remaining) {
  if (remaining >= 16) return 16;
  if (remaining > 4) return remaining > 8 ? 16 : 8;
  return remaining > 1 ? 4 : 1;
}

// Writes x[b0 : b0+valid, :] transposed into xt as [cols, width], zero padding lanes >= valid.
inline void TransposeTile(const float* x, int64_t cols, int64_t b0, int valid, int width, float* xt) {
  for (int64_t c = 0; c < cols; ++c) {
    float* dst = xt + c * width;
    for (int b = 0; b < valid; ++b) dst[b] = x[(b0 + b) * cols + c];
    for (int b = valid; b < width; ++b) dst[b] = 0.f;
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DC_TFOPS_X86_DISPATCH 1

// AVX2+FMA versions of the 8- and 16-wide tile kernels, compiled for that target only (the library
// itself is built for baseline x86-64, as TensorFlow's flags ask) and chosen at run time when the CPU
// has them. Two accumulator sets alternate between consecutive entries so that the FMA latency chain
// does not bound the loop.
template <int W>
__attribute__((target("avx2,fma"))) void SparseMatMulTileRowsAvx2(const codec::SparseMatrix& m, const float* xt,
                                                                int valid, float* y, int64_t y_stride,
                                                                int64_t row_begin, int64_t row_end) {
  static_assert(W == 8 || W == 16, "AVX2 tiles are 8 or 16 wide");
  constexpr int V = W / 8;  // __m256 registers per accumulator set
  const uint8_t* delta = m.delta.data();
  const uint8_t* code = m.code.data();
  const float* codebook = m.codebook.data();
  for (int64_t r = row_begin; r < row_end; ++r) {
    __m256 even[V], odd[V];
    for (int v = 0; v < V; ++v) even[v] = odd[v] = _mm256_setzero_ps();
    int64_t col = -1;
    size_t e = m.row_ptr[r];
    const size_t end = m.row_ptr[r + 1];
    bool parity = false;
    for (; e < end; ++e) {
      const uint8_t d = delta[e];
      if (d == 0) {
        col += kFillerStep;
        continue;
      }
      col += d;
      const __m256 w = _mm256_set1_ps(codebook[code[e]]);
      const float* xr = xt + col * W;
      // Written as two branches on constant-indexed arrays so the accumulators stay in registers.
      if (parity) {
        for (int v = 0; v < V; ++v) odd[v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8 * v), odd[v]);
      } else {
        for (int v = 0; v < V; ++v) even[v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8 * v), even[v]);
      }
      parity = !parity;
    }
    alignas(32) float out[W];
    for (int v = 0; v < V; ++v) _mm256_store_ps(out + 8 * v, _mm256_add_ps(even[v], odd[v]));
    for (int b = 0; b < valid; ++b) y[b * y_stride + r] = out[b];
  }
}

// True when the AVX2 kernels may run. DC_KERAS_DISABLE_AVX2=1 forces the generic path, so that tests can
// cover the code that CPUs without AVX2 run.
inline bool CpuHasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          std::getenv("DC_KERAS_DISABLE_AVX2") == nullptr;
  return has;
}
#endif

// Dispatches one tile to the kernel of its width (1 means the plain mat-vec path).
inline void SparseMatMulTile(const codec::SparseMatrix& m, const float* xt, int width, int valid, float* y,
                             int64_t y_stride, int64_t row_begin, int64_t row_end) {
#ifdef DC_TFOPS_X86_DISPATCH
  if ((width == 16 || width == 8) && CpuHasAvx2Fma()) {
    if (width == 16) {
      SparseMatMulTileRowsAvx2<16>(m, xt, valid, y, y_stride, row_begin, row_end);
    } else {
      SparseMatMulTileRowsAvx2<8>(m, xt, valid, y, y_stride, row_begin, row_end);
    }
    return;
  }
#endif
  switch (width) {
    case 16: SparseMatMulTileRows<16>(m, xt, valid, y, y_stride, row_begin, row_end); break;
    case 8: SparseMatMulTileRows<8>(m, xt, valid, y, y_stride, row_begin, row_end); break;
    case 4: SparseMatMulTileRows<4>(m, xt, valid, y, y_stride, row_begin, row_end); break;
    default: SparseMatVecRows(m, xt, y, row_begin, row_end); break;
  }
}

}  // namespace tfops
}  // namespace dc

#endif  // DC_KERAS_OPS_TF_DC_SPARSE_COMPUTE_H_
