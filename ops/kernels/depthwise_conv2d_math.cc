// Inner loops of DcDepthwiseConv2D (see kernels/depthwise_conv2d.h).
#include <algorithm>
#include <vector>

#include "kernels/depthwise_conv2d.h"
#include "kernels/neon_math.h"
#include "kernels/row_splitter.h"

namespace dc::kernels {
namespace {

using codec::SparseMatrix;

// An output row (n, oy) is enough work for a task of its own.
constexpr int64_t kMinRowsPerThread = 1;

// Element offset of tap t = ky * kw + kx from the window's top-left input pixel; small buffer on the stack
// because typical kernels have at most 7x7 taps.
class TapOffsets {
 public:
  explicit TapOffsets(const ConvGeometry& g) {
    const int taps = g.kernel_h * g.kernel_w;
    if (taps > kStack) heap_.resize(taps);
    data_ = taps > kStack ? heap_.data() : stack_;
    for (int ky = 0; ky < g.kernel_h; ++ky)
      for (int kx = 0; kx < g.kernel_w; ++kx)
        data_[ky * g.kernel_w + kx] =
            (int64_t{ky} * g.dilation_h * g.in_w + int64_t{kx} * g.dilation_w) * g.in_c;
  }
  const int64_t* data() const { return data_; }

 private:
  static constexpr int kStack = 64;
  int64_t stack_[kStack];
  std::vector<int64_t> heap_;
  int64_t* data_;
};

// True when the window of output pixel (oy, ox) lies inside the image.
inline bool Interior(const ConvGeometry& g, int iy0, int ix0) {
  return iy0 >= 0 && ix0 >= 0 && iy0 + (g.kernel_h - 1) * g.dilation_h < g.in_h &&
         ix0 + (g.kernel_w - 1) * g.dilation_w < g.in_w;
}

}  // namespace

void SparseDepthwiseConv2D(const SparseMatrix& w, int multiplier, const float* bias, const ConvGeometry& g,
                           const float* x, float* y, Activation act, RowSplitter* pool) {
  const int64_t out_c = w.rows;
  const float* cb = w.codebook.data();
  const TapOffsets offsets(g);
  const int64_t* tap_off = offsets.data();
  SplitRows(pool, int64_t{g.batch} * g.out_h, kMinRowsPerThread, [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const int64_t n = row / g.out_h;
      const int oy = static_cast<int>(row % g.out_h);
      const int iy0 = oy * g.stride_h - g.pad_top;
      for (int ox = 0; ox < g.out_w; ++ox) {
        const int ix0 = ox * g.stride_w - g.pad_left;
        float* yo = y + (row * g.out_w + ox) * out_c;
        if (Interior(g, iy0, ix0)) {
          const float* base = x + ((n * g.in_h + iy0) * g.in_w + ix0) * g.in_c;
          for (int64_t oc = 0; oc < out_c; ++oc) {
            const float* xc = base + oc / multiplier;
            float acc = bias ? bias[oc] : 0.f;
            w.ForEachEntry(oc, [&](int64_t t, uint8_t code) { acc += cb[code] * xc[tap_off[t]]; });
            yo[oc] = acc;
          }
        } else {  // border: check every tap against the image
          for (int64_t oc = 0; oc < out_c; ++oc) {
            const int64_t ci = oc / multiplier;
            float acc = bias ? bias[oc] : 0.f;
            w.ForEachEntry(oc, [&](int64_t t, uint8_t code) {
              const int iy = iy0 + static_cast<int>(t / g.kernel_w) * g.dilation_h;
              const int ix = ix0 + static_cast<int>(t % g.kernel_w) * g.dilation_w;
              if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) return;
              acc += cb[code] * x[((n * g.in_h + iy) * g.in_w + ix) * g.in_c + ci];
            });
            yo[oc] = acc;
          }
        }
        simd::ActivateInPlace(yo, static_cast<size_t>(out_c), act);
      }
    }
  });
}

void DenseDepthwiseConv2D(const float* w, int multiplier, const float* bias, const ConvGeometry& g, const float* x,
                          float* y, Activation act, RowSplitter* pool) {
  const int64_t out_c = int64_t{g.in_c} * multiplier;
  SplitRows(pool, int64_t{g.batch} * g.out_h, kMinRowsPerThread, [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const int64_t n = row / g.out_h;
      const int oy = static_cast<int>(row % g.out_h);
      for (int ox = 0; ox < g.out_w; ++ox) {
        float* yo = y + (row * g.out_w + ox) * out_c;
        for (int64_t oc = 0; oc < out_c; ++oc) yo[oc] = bias ? bias[oc] : 0.f;
        for (int ky = 0; ky < g.kernel_h; ++ky) {
          const int iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
          if (iy < 0 || iy >= g.in_h) continue;
          for (int kx = 0; kx < g.kernel_w; ++kx) {
            const int ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w;
            if (ix < 0 || ix >= g.in_w) continue;
            const float* wt = w + (int64_t{ky} * g.kernel_w + kx) * out_c;
            const float* xin = x + ((n * g.in_h + iy) * g.in_w + ix) * g.in_c;
            if (multiplier == 1) {  // the common case: contiguous, vectorised by the compiler
              for (int64_t oc = 0; oc < out_c; ++oc) yo[oc] += wt[oc] * xin[oc];
            } else {
              for (int64_t oc = 0; oc < out_c; ++oc) yo[oc] += wt[oc] * xin[oc / multiplier];
            }
          }
        }
        simd::ActivateInPlace(yo, static_cast<size_t>(out_c), act);
      }
    }
  });
}

void ReferenceDepthwiseConv2D(const float* w, int multiplier, const float* bias, const ConvGeometry& g,
                              const float* x, float* y, Activation act) {
  const int out_c = g.in_c * multiplier;
  for (int n = 0; n < g.batch; ++n)
    for (int oy = 0; oy < g.out_h; ++oy)
      for (int ox = 0; ox < g.out_w; ++ox)
        for (int oc = 0; oc < out_c; ++oc) {
          double acc = bias ? bias[oc] : 0.0;
          for (int ky = 0; ky < g.kernel_h; ++ky)
            for (int kx = 0; kx < g.kernel_w; ++kx) {
              const int iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
              const int ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w;
              if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
              acc += static_cast<double>(w[(static_cast<int64_t>(ky) * g.kernel_w + kx) * out_c + oc]) *
                     x[((static_cast<int64_t>(n) * g.in_h + iy) * g.in_w + ix) * g.in_c + oc / multiplier];
            }
          y[((static_cast<int64_t>(n) * g.out_h + oy) * g.out_w + ox) * out_c + oc] =
              Activate(static_cast<float>(acc), act);
        }
}

}  // namespace dc::kernels
