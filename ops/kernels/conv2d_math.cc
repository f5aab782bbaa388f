// Inner loops of DcConv2D: sparse (and dense-fallback) im2col GEMM over panels of simd::kLanes output pixels.
// NEON is chosen at compile time through kernels/neon_math.h; on x86-64 the same loops are compiled twice
// (portable and AVX2+FMA) and chosen at run time, like the FC kernel.
#include <algorithm>
#include <climits>
#include <cstring>
#include <string>

#include "kernels/conv2d.h"
#include "kernels/neon_math.h"
#include "kernels/row_splitter.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !DC_KERNELS_NEON
#define DC_CONV_X86_DISPATCH 1
#else
#define DC_CONV_X86_DISPATCH 0
#endif

namespace dc::kernels {
namespace {

using codec::SparseMatrix;
using simd::Acc16;
constexpr int kLanes = simd::kLanes;

// Panels im2col'ed at once: one per task when threads split the pixels. Bounds scratch to
// kTilePanels * kh * kw * in_c * 16 floats.
constexpr int64_t kTilePanels = 8;

#if DC_CONV_X86_DISPATCH
bool UseAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has && simd::AvxClonesAllowed();
}
#endif

// Writes the patches of output pixels [p0, p0 + nb) transposed: xt[c * kLanes + j] = patch_{p0 + j}[c];
// lanes j >= nb are zero so that full-width FMAs stay exact. Tap-major with the pixel innermost, so that the
// writes run contiguously through the panel (one cache line per column for in_c = 1, LeNet's first layer);
// pixel coordinates are computed once per panel instead of once per tap.
void Im2ColPanel(const ConvGeometry& g, const float* x, int64_t p0, int nb, float* xt) {
  const int cin = g.in_c;
  int64_t img[kLanes];  // element offset of image n of lane j
  int iy0[kLanes], ix0[kLanes];
  int64_t rest = p0 / g.out_w;
  int ox = static_cast<int>(p0 % g.out_w), oy = static_cast<int>(rest % g.out_h);
  int64_t n = rest / g.out_h;
  for (int j = 0; j < nb; ++j) {
    img[j] = n * g.in_h * g.in_w * cin;
    iy0[j] = oy * g.stride_h - g.pad_top;
    ix0[j] = ox * g.stride_w - g.pad_left;
    if (++ox == g.out_w) {
      ox = 0;
      if (++oy == g.out_h) {
        oy = 0;
        ++n;
      }
    }
  }
  // A full panel inside one output row: per tap, the lanes read x at a fixed stride, and one range check per
  // tap replaces the per-lane checks (the common case away from image borders).
  const bool one_row = nb == kLanes && img[0] == img[kLanes - 1] && iy0[0] == iy0[kLanes - 1];
  const int64_t lane_step = int64_t{g.stride_w} * cin;
  for (int ky = 0; ky < g.kernel_h; ++ky) {
    for (int kx = 0; kx < g.kernel_w; ++kx) {
      float* col = xt + static_cast<int64_t>(ky * g.kernel_w + kx) * cin * kLanes;
      if (one_row) {
        const int iy = iy0[0] + ky * g.dilation_h;
        const int ix_first = ix0[0] + kx * g.dilation_w, ix_last = ix0[kLanes - 1] + kx * g.dilation_w;
        if (iy >= 0 && iy < g.in_h && ix_first >= 0 && ix_last < g.in_w) {
          const float* src = x + img[0] + (static_cast<int64_t>(iy) * g.in_w + ix_first) * cin;
          for (int ci = 0; ci < cin; ++ci)
            for (int j = 0; j < kLanes; ++j) col[ci * kLanes + j] = src[j * lane_step + ci];
          continue;
        }
      }
      for (int j = 0; j < kLanes; ++j) {
        const int iy = j < nb ? iy0[j] + ky * g.dilation_h : -1;
        const int ix = j < nb ? ix0[j] + kx * g.dilation_w : -1;
        if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) {  // padding, or a lane past the last pixel
          for (int ci = 0; ci < cin; ++ci) col[ci * kLanes + j] = 0.f;
          continue;
        }
        const float* src = x + img[j] + (static_cast<int64_t>(iy) * g.in_w + ix) * cin;
        for (int ci = 0; ci < cin; ++ci) col[ci * kLanes + j] = src[ci];
      }
    }
  }
}

// Rows [r0, r1) of one panel: each nonzero weight is one 16-lane FMA on column `col` of the panel.
__attribute__((always_inline)) inline void SparsePanelImpl(const SparseMatrix& w, const float* bias, const float* xt,
                                                           int nb, float* y, int64_t y_stride, Activation act) {
  const float* cb = w.codebook.data();
  for (int64_t r = 0; r < w.rows; ++r) {
    Acc16 acc = Acc16::Broadcast(bias ? bias[r] : 0.f);
    w.ForEachEntry(r, [&](int64_t col, uint8_t code) { acc.Fma(cb[code], xt + col * kLanes); });
    float out[kLanes];
    acc.ActivateStore(act, out);
    for (int j = 0; j < nb; ++j) y[j * y_stride + r] = out[j];
  }
}

__attribute__((always_inline)) inline void DensePanelImpl(const float* w, int out_c, int64_t cols, const float* bias,
                                                          const float* xt, int nb, float* y, Activation act) {
  for (int r = 0; r < out_c; ++r) {
    const float* wr = w + r * cols;
    Acc16 acc = Acc16::Broadcast(bias ? bias[r] : 0.f);
    for (int64_t c = 0; c < cols; ++c) acc.Fma(wr[c], xt + c * kLanes);
    float out[kLanes];
    acc.ActivateStore(act, out);
    for (int j = 0; j < nb; ++j) y[static_cast<int64_t>(j) * out_c + r] = out[j];
  }
}

void SparsePanelGeneric(const SparseMatrix& w, const float* bias, const float* xt, int nb, float* y, int64_t y_stride,
                        Activation act) {
  SparsePanelImpl(w, bias, xt, nb, y, y_stride, act);
}

void DensePanelGeneric(const float* w, int out_c, int64_t cols, const float* bias, const float* xt, int nb, float* y,
                       Activation act) {
  DensePanelImpl(w, out_c, cols, bias, xt, nb, y, act);
}

#if DC_CONV_X86_DISPATCH
__attribute__((target("avx2,fma"))) void SparsePanelAvx2(const SparseMatrix& w, const float* bias, const float* xt,
                                                         int nb, float* y, int64_t y_stride, Activation act) {
  SparsePanelImpl(w, bias, xt, nb, y, y_stride, act);
}

__attribute__((target("avx2,fma"))) void DensePanelAvx2(const float* w, int out_c, int64_t cols, const float* bias,
                                                        const float* xt, int nb, float* y, Activation act) {
  DensePanelImpl(w, out_c, cols, bias, xt, nb, y, act);
}
#endif

// Runs panel_fn(xt, p0, nb) for every panel of the output: nb <= kLanes output pixels from p0 on, their
// patches im2col'ed into xt (the panel's own region of `scratch`); with several threads, the panels of a
// tile are spread over the pool.
template <typename PanelFn>
void ForEachPanel(const ConvGeometry& g, const float* x, float* scratch, RowSplitter* pool, const PanelFn& panel_fn) {
  const int64_t pixels = g.OutPixels();
  const int64_t panels = (pixels + kLanes - 1) / kLanes;
  auto panel = [&](int64_t index, float* xt) {
    const int64_t p0 = index * kLanes;
    const int nb = static_cast<int>(std::min<int64_t>(kLanes, pixels - p0));
    Im2ColPanel(g, x, p0, nb, xt);
    panel_fn(static_cast<const float*>(xt), p0, nb);
  };
  const int64_t region = g.PatchSize() * kLanes;
  if (pool == nullptr || panels < 2) {
    for (int64_t i = 0; i < panels; ++i) panel(i, scratch);
    return;
  }
  const int64_t tile = std::min(panels, kTilePanels);
  for (int64_t t0 = 0; t0 < panels; t0 += tile) {
    const int64_t tasks = std::min(tile, panels - t0);
    // Each panel of the tile owns region `task` of scratch, whichever thread runs it.
    pool->ForRanges(tasks, /*min_rows_per_thread=*/1, [&](int64_t first, int64_t last) {
      for (int64_t task = first; task < last; ++task) panel(t0 + task, scratch + task * region);
    });
  }
}

}  // namespace

const char* simd::PathName() {
#if DC_KERNELS_NEON
  return "neon";
#elif DC_CONV_X86_DISPATCH
  return UseAvx2() ? "avx2" : "portable";
#else
  return "portable";
#endif
}

Status ComputeConvGeometry(Padding padding, ConvGeometry* g) {
  if (g->batch < 1 || g->in_h < 1 || g->in_w < 1 || g->in_c < 1)
    return Status::Error("input shape must be positive [batch, height, width, channels]");
  if (g->kernel_h < 1 || g->kernel_w < 1 || g->stride_h < 1 || g->stride_w < 1 || g->dilation_h < 1 ||
      g->dilation_w < 1)
    return Status::Error("kernel size, strides and dilations must be >= 1");
  if (padding != Padding::kSame && padding != Padding::kValid)
    return Status::Error("padding must be SAME (0) or VALID (1), got " + std::to_string(static_cast<int>(padding)));
  auto out_size = [padding](int64_t in, int64_t eff, int64_t stride) {
    return padding == Padding::kSame ? (in + stride - 1) / stride : (in - eff + stride) / stride;
  };
  const int64_t eff_h = int64_t{g->kernel_h - 1} * g->dilation_h + 1;
  const int64_t eff_w = int64_t{g->kernel_w - 1} * g->dilation_w + 1;
  const int64_t out_h = out_size(g->in_h, eff_h, g->stride_h), out_w = out_size(g->in_w, eff_w, g->stride_w);
  if (out_h < 1 || out_w < 1)
    return Status::Error("VALID convolution of a " + std::to_string(g->in_h) + "x" + std::to_string(g->in_w) +
                         " input with a " + std::to_string(eff_h) + "x" + std::to_string(eff_w) +
                         " (dilated) kernel has an empty output");
  if (eff_h > INT_MAX || eff_w > INT_MAX || g->PatchSize() > INT_MAX)
    return Status::Error("kernel too large");
  g->out_h = static_cast<int>(out_h);
  g->out_w = static_cast<int>(out_w);
  g->pad_top = static_cast<int>(std::max<int64_t>(0, (out_h - 1) * g->stride_h + eff_h - g->in_h) / 2);
  g->pad_left = static_cast<int>(std::max<int64_t>(0, (out_w - 1) * g->stride_w + eff_w - g->in_w) / 2);
  return Status();
}

Status CheckStridesAndDilations(const ConvGeometry& g) {
  if (g.stride_h <= 0 || g.stride_w <= 0 || g.dilation_h <= 0 || g.dilation_w <= 0)
    return Status::Error("options give a non-positive stride or dilation");
  return Status();
}

Status ConvInputGeometry(const std::vector<int>& in, const ConvGeometry& proto, Padding padding, ConvGeometry* g) {
  if (in.size() != 4 || in[3] != proto.in_c)
    return Status::Error("input has shape " + ShapeString(in) + ", the layer expects [N, H, W, " +
                         std::to_string(proto.in_c) + "]");
  *g = proto;
  g->batch = in[0];
  g->in_h = in[1];
  g->in_w = in[2];
  return ComputeConvGeometry(padding, g);
}

size_t Conv2DScratchFloats(const ConvGeometry& g) {
  const int64_t panels = (g.OutPixels() + kLanes - 1) / kLanes;
  return static_cast<size_t>(g.PatchSize() * kLanes * std::max<int64_t>(1, std::min(panels, kTilePanels)));
}

void SparseConv2D(const SparseMatrix& w, const float* bias, const ConvGeometry& g, const float* x, float* y,
                  Activation act, float* scratch, RowSplitter* pool) {
#if DC_CONV_X86_DISPATCH
  const bool avx2 = UseAvx2();
#endif
  ForEachPanel(g, x, scratch, pool, [&](const float* xt, int64_t p0, int nb) {
    float* yp = y + p0 * w.rows;
#if DC_CONV_X86_DISPATCH
    if (avx2) return SparsePanelAvx2(w, bias, xt, nb, yp, w.rows, act);
#endif
    SparsePanelGeneric(w, bias, xt, nb, yp, w.rows, act);
  });
}

void DenseConv2D(const float* w, int out_c, const float* bias, const ConvGeometry& g, const float* x, float* y,
                 Activation act, float* scratch, RowSplitter* pool) {
  const int64_t cols = g.PatchSize();
#if DC_CONV_X86_DISPATCH
  const bool avx2 = UseAvx2();
#endif
  ForEachPanel(g, x, scratch, pool, [&](const float* xt, int64_t p0, int nb) {
    float* yp = y + p0 * out_c;
#if DC_CONV_X86_DISPATCH
    if (avx2) return DensePanelAvx2(w, out_c, cols, bias, xt, nb, yp, act);
#endif
    DensePanelGeneric(w, out_c, cols, bias, xt, nb, yp, act);
  });
}

void ReferenceConv2D(const float* w, int out_c, const float* bias, const ConvGeometry& g, const float* x, float* y,
                     Activation act) {
  for (int n = 0; n < g.batch; ++n)
    for (int oy = 0; oy < g.out_h; ++oy)
      for (int ox = 0; ox < g.out_w; ++ox)
        for (int r = 0; r < out_c; ++r) {
          double acc = bias ? bias[r] : 0.0;
          for (int ky = 0; ky < g.kernel_h; ++ky)
            for (int kx = 0; kx < g.kernel_w; ++kx) {
              const int iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
              const int ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w;
              if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
              for (int ci = 0; ci < g.in_c; ++ci)
                acc += static_cast<double>(w[((static_cast<int64_t>(r) * g.kernel_h + ky) * g.kernel_w + kx) * g.in_c + ci]) *
                       x[((static_cast<int64_t>(n) * g.in_h + iy) * g.in_w + ix) * g.in_c + ci];
            }
          y[((static_cast<int64_t>(n) * g.out_h + oy) * g.out_w + ox) * out_c + r] =
              Activate(static_cast<float>(acc), act);
        }
}

}  // namespace dc::kernels
