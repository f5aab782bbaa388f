// DcConv2D on block-sparse filters (codec::BlockSparseMatrix of the filter's [out_c, kh * kw * in_c] view):
// kCols blocks are L consecutive input channels of one output channel at one tap (what Keras block pruning
// of a Conv2D kernel with block_size (L, 1) leaves when in_c is a multiple of L), kRows blocks L consecutive
// output channels sharing one input. The block-sparse FC loops (BlockFullyConnectedWeights) do the math with
// output pixels as the batch: each pixel's patch (its input pixel for a 1x1 convolution) is laid out as one
// padded input row, a tile of pixels at a time, so scratch stays bounded whatever the image size.
#ifndef DC_KERNELS_BLOCK_CONV2D_H_
#define DC_KERNELS_BLOCK_CONV2D_H_

#include <cstddef>

#include "kernels/base.h"
#include "kernels/block_fully_connected.h"
#include "kernels/conv2d.h"

namespace dc::kernels {

class RowSplitter;

// Output pixels whose patch rows are built at once: threads split a tile's pixels. Bounds scratch to
// kBlockConvTilePixels padded patch rows.
constexpr int64_t kBlockConvTilePixels = 64;

// Floats of scratch BlockConv2D needs for `g` with weights `w`.
size_t BlockConv2DScratchFloats(const BlockFullyConnectedWeights& w, const ConvGeometry& g);

// y (NHWC, w.rows() channels) = act(conv(x, W) + bias), as SparseConv2D. w.cols() must equal g.PatchSize().
// bias may be null, pool may be null; scratch holds BlockConv2DScratchFloats(w, g) floats.
void BlockConv2D(const BlockFullyConnectedWeights& w, const float* bias, const ConvGeometry& g, const float* x,
                 float* y, Activation act, float* scratch, RowSplitter* pool);

}  // namespace dc::kernels

#endif  // DC_KERNELS_BLOCK_CONV2D_H_
