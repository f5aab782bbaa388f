// What the delegate's two convolution kernels (DcConv2D, DcDepthwiseConv2D) share: the options fields they
// both read, the output shape from the input shape, and Run's geometry and bias handling. Each op supplies
// its Init (options checks, decoding) and Compute (the kernel library call).
#ifndef DC_DELEGATE_TFLITE_KERNELS_CONV_KERNEL_H_
#define DC_DELEGATE_TFLITE_KERNELS_CONV_KERNEL_H_

#include <vector>

#include "kernel_registry.h"
#include "thread_pool.h"
#include "tflite_kernels/tflite_util.h"

namespace dc::delegate {

class ConvKernelBase : public OpKernel {
 public:
  Status OutputShape(const std::vector<int>& in, std::vector<int>* out) const override {
    ConvGeometry g;
    Status st = Geometry(in, &g);
    if (!st.ok()) return st;
    *out = {g.batch, g.out_h, g.out_w, out_c_};
    return Status();
  }

  int OutputType() const override { return kTfLiteFloat32; }

  Status Run(const void* input, const std::vector<int>& in, void* output, float* scratch,
             ThreadPool* pool) const final {
    ConvGeometry g;
    Status st = Geometry(in, &g);  // Prepare checked this shape through OutputShape
    if (!st.ok()) return st;
    Compute(g, bias_.empty() ? nullptr : bias_.data(), static_cast<const float*>(input), static_cast<float*>(output),
            scratch, pool);
    return Status();
  }

  size_t ResidentBytes() const override {
    return dense_mode_ ? dense_.capacity() * sizeof(float) : sparse_.ResidentBytes();
  }

 protected:
  // y = act(conv(x) + bias) for geometry g; bias may be null.
  virtual void Compute(const ConvGeometry& g, const float* bias, const float* x, float* y, float* scratch,
                       ThreadPool* pool) const = 0;

  // Takes the fields both records share; Init then checks the op's own.
  void SetOptions(const kernel_util::ConvOptions& opt) {
    activation_ = opt.activation;
    padding_ = opt.padding;
    out_c_ = opt.out_c;
    proto_ = opt.proto;
  }

  Status Geometry(const std::vector<int>& in, ConvGeometry* g) const {
    return kernels::ConvInputGeometry(in, proto_, padding_, g);
  }

  Activation activation_ = Activation::kNone;
  Padding padding_ = Padding::kValid;
  int out_c_ = 0;
  ConvGeometry proto_;  // filter, strides, dilations, in_c; the rest per input shape
  bool dense_mode_ = false;
  codec::SparseMatrix sparse_;
  std::vector<float> dense_;
  std::vector<float> bias_;
};

}  // namespace dc::delegate

#endif  // DC_DELEGATE_TFLITE_KERNELS_CONV_KERNEL_H_
