// DcConv2D: TFLite's CONV_2D (NHWC input, filter [out_c, kh, kw, in_c]) computed on the compressed sparse
// form of the filter. The filter is a dc::codec::SparseMatrix with rows = out_c and cols = kh * kw * in_c,
// which is exactly the im2col layout: output pixel p, channel r = act(bias[r] + sum_c W[r, c] * patch_p[c]),
// with patch_p[(ky * kw + kx) * in_c + ci] = x[n, oy * sh - pad_top + ky * dh, ox * sw - pad_left + kx * dw, ci]
// (0 outside the image).
//
// Sparse im2col GEMM: output pixels go in panels of simd::kLanes; a panel's patches are written transposed
// (column c of all its pixels contiguous), so each nonzero weight of a row is one 16-lane FMA.
//
// The math is exposed here so that tflite_delegate/tests/conv2d_test.cc can check it against a naive dense
// convolution without a TFLite runtime; also used by the depthwise kernel (geometry, padding).
#ifndef DC_KERNELS_CONV2D_H_
#define DC_KERNELS_CONV2D_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "dc_codec.h"
#include "kernels/weights.h"  // ValidateSparseMatrix
#include "kernels/base.h"

namespace dc::kernels {

class RowSplitter;

// TFLite's Padding enum values.
enum class Padding : uint8_t { kSame = 0, kValid = 1 };

// Shapes of one 2-D convolution (NHWC), as TFLite computes them.
struct ConvGeometry {
  int batch = 0, in_h = 0, in_w = 0, in_c = 0;
  int kernel_h = 0, kernel_w = 0;
  int stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  int out_h = 0, out_w = 0;
  int pad_top = 0, pad_left = 0;  // TFLite puts the odd padding pixel at the bottom / right

  int64_t OutPixels() const { return int64_t{batch} * out_h * out_w; }
  int64_t PatchSize() const { return int64_t{kernel_h} * kernel_w * in_c; }
};

// Fills out_h/out_w/pad_top/pad_left of `g` from the other fields with TFLite's formulas (SAME: out =
// ceil(in / stride); VALID: out = ceil((in - effective_kernel + 1) / stride), effective_kernel =
// (k - 1) * dilation + 1). Errors on non-positive sizes or an empty output.
Status ComputeConvGeometry(Padding padding, ConvGeometry* g);

// Rejects the non-positive strides or dilations an options record may carry.
Status CheckStridesAndDilations(const ConvGeometry& g);

// Completes `proto` (filter, strides, dilations, in_c) into `g` for the NHWC input shape `in`: checks that
// `in` is [N, H, W, proto.in_c], then computes the output size and padding (ComputeConvGeometry).
Status ConvInputGeometry(const std::vector<int>& in, const ConvGeometry& proto, Padding padding, ConvGeometry* g);

// Floats of scratch SparseConv2D / DenseConv2D need for `g` (im2col panels).
size_t Conv2DScratchFloats(const ConvGeometry& g);

// y (NHWC, out_c = w.rows channels) = act(conv(x, W) + bias). w.cols must equal g.PatchSize() and W must
// have passed ValidateSparseMatrix. bias may be null, pool may be null; scratch holds
// Conv2DScratchFloats(g) floats.
void SparseConv2D(const codec::SparseMatrix& w, const float* bias, const ConvGeometry& g, const float* x, float* y,
                  Activation act, float* scratch, RowSplitter* pool);

// Same with W as dense float32 [out_c, kh * kw * in_c] (the delegate's mode=dense).
void DenseConv2D(const float* w, int out_c, const float* bias, const ConvGeometry& g, const float* x, float* y,
                 Activation act, float* scratch, RowSplitter* pool);

// Naive direct convolution with dense weights in TFLite's [out_c, kh, kw, in_c] layout, double accumulation:
// the reference the kernel test compares both paths against.
void ReferenceConv2D(const float* w, int out_c, const float* bias, const ConvGeometry& g, const float* x, float* y,
                     Activation act);

namespace simd {
const char* PathName();
}  // namespace simd

}  // namespace dc::kernels

#endif  // DC_KERNELS_CONV2D_H_
