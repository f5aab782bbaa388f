// DcDepthwiseConv2D: TFLite's DEPTHWISE_CONV_2D (NHWC input of in_c channels, filter [1, kh, kw, out_c] with
// out_c = in_c * multiplier, output channel oc reading input channel oc / multiplier) computed on the
// compressed sparse form of the filter.
//
// The exporter stores the filter transposed, as [out_c, kh * kw] (custom options record layout 1), so that the
// dc::codec::SparseMatrix has one row per output channel listing only that channel's nonzero taps. The kernel
// walks output pixels and, per pixel, every channel's nonzero taps (the whole matrix is a few hundred bytes
// and stays in L1); pixels whose window lies inside the image skip all bounds checks.
#ifndef DC_KERNELS_DEPTHWISE_CONV2D_H_
#define DC_KERNELS_DEPTHWISE_CONV2D_H_

#include <cstdint>

#include "dc_codec.h"
#include "kernels/conv2d.h"  // ConvGeometry, Padding, Activation
#include "kernels/base.h"

namespace dc::kernels {

class RowSplitter;

// y (NHWC, w.rows = g.in_c * multiplier channels) = act(depthwise_conv(x, W) + bias). w: rows = out_c,
// cols = kh * kw, validated with ValidateSparseMatrix. bias may be null, pool may be null.
void SparseDepthwiseConv2D(const codec::SparseMatrix& w, int multiplier, const float* bias, const ConvGeometry& g,
                           const float* x, float* y, Activation act, RowSplitter* pool);

// Same with dense float32 weights stored tap-major, w[(ky * kw + kx) * out_c + oc] (TFLite's own filter
// layout without the leading 1): the delegate's mode=dense.
void DenseDepthwiseConv2D(const float* w, int multiplier, const float* bias, const ConvGeometry& g, const float* x,
                          float* y, Activation act, RowSplitter* pool);

// Naive reference with TFLite's [1, kh, kw, out_c] filter, double accumulation.
void ReferenceDepthwiseConv2D(const float* w, int multiplier, const float* bias, const ConvGeometry& g,
                              const float* x, float* y, Activation act);

}  // namespace dc::kernels

#endif  // DC_KERNELS_DEPTHWISE_CONV2D_H_
