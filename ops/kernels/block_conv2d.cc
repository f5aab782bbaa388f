// Block-sparse DcConv2D (see block_conv2d.h): patch rows laid out as the block loops read them, then the
// block-sparse FC loops with the tile's pixels as the batch.
#include "kernels/block_conv2d.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/row_splitter.h"

namespace dc::kernels {
namespace {

// Scratch floats the loops' rows start after: room to move the start to a 64-byte boundary.
constexpr int64_t kAlignFloats = 16;

// Writes the patch of output pixel p as one padded row: tap (ky, kx) contributes in_c consecutive floats, an
// input pixel (contiguous in NHWC) or zeros where the tap falls in the padding; then zeros up to
// padded_cols. For a 1x1 convolution with stride 1 this is one copy of the input pixel.
void PatchRow(const ConvGeometry& g, const float* x, int64_t p, int64_t padded_cols, float* row) {
  const int64_t cin = g.in_c;
  const int ox = static_cast<int>(p % g.out_w);
  const int64_t rest = p / g.out_w;
  const int oy = static_cast<int>(rest % g.out_h);
  const int64_t n = rest / g.out_h;
  const float* image = x + n * g.in_h * g.in_w * cin;
  float* out = row;
  for (int ky = 0; ky < g.kernel_h; ++ky) {
    const int iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
    for (int kx = 0; kx < g.kernel_w; ++kx, out += cin) {
      const int ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w;
      if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w)
        std::fill(out, out + cin, 0.f);
      else
        std::memcpy(out, image + (static_cast<int64_t>(iy) * g.in_w + ix) * cin, sizeof(float) * cin);
    }
  }
  std::fill(out, row + padded_cols, 0.f);
}

}  // namespace

size_t BlockConv2DScratchFloats(const BlockFullyConnectedWeights& w, const ConvGeometry& g) {
  const int64_t tile = std::max<int64_t>(1, std::min(g.OutPixels(), kBlockConvTilePixels));
  return static_cast<size_t>(tile * w.padded_cols() + kAlignFloats);
}

// Tiles of pixels in order; with a pool, each thread builds and runs its own pixels of a tile (their rows
// of scratch are its own), all groups of the weights for each pixel.
void BlockConv2D(const BlockFullyConnectedWeights& w, const float* bias, const ConvGeometry& g, const float* x,
                 float* y, Activation act, float* scratch, RowSplitter* pool) {
  const int64_t pixels = g.OutPixels(), out_c = w.rows(), stride = w.padded_cols();
  if (pixels < 1 || out_c == 0) return;
  const size_t misalignment = reinterpret_cast<uintptr_t>(scratch) % (kAlignFloats * sizeof(float));
  if (misalignment % sizeof(float) == 0 && misalignment != 0)
    scratch += (kAlignFloats * sizeof(float) - misalignment) / sizeof(float);
  for (int64_t t0 = 0; t0 < pixels; t0 += kBlockConvTilePixels) {
    const int64_t tile = std::min(kBlockConvTilePixels, pixels - t0);
    // Four pixels per thread at least: the loops share each weight lookup between four rows.
    SplitRows(pool, tile, /*min_rows_per_thread=*/4, [&](int64_t first, int64_t last) {
      for (int64_t i = first; i < last; ++i) PatchRow(g, x, t0 + i, stride, scratch + i * stride);
      w.RunPaddedRows(bias, scratch + first * stride, last - first, y + (t0 + first) * out_c, act);
    });
  }
}

}  // namespace dc::kernels
