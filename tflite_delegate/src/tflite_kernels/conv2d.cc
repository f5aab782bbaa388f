// DcConv2D: TFLite's CONV_2D with its float filter replaced by a dc_codec blob (ops/kernels/conv2d.h has the math).
//
// Inputs: 0 activations (float32 [N, H, W, in_c]), 1 blob (constant uint8; filter [out_c, kh, kw, in_c]),
// 2 bias (constant float32 [out_c], optional). Custom options (40 bytes, little endian, written by
// dc_keras/export/conv_rewriters.py):
//   0 char[4] "DCCV"   4 uint8 version (1)   5 uint8 fused activation (TFLite ActivationFunctionType)
//   6 uint8 padding (TFLite Padding: 0 SAME, 1 VALID)   7 uint8 reserved (0)
//   8 int32 out_c   12 int32 kernel_h   16 int32 kernel_w   20 int32 in_c
//   24 int32 stride_h   28 int32 stride_w   32 int32 dilation_h   36 int32 dilation_w
#include <string>

#include "kernel_registry.h"
#include "kernels/conv2d.h"
#include "tflite_kernels/conv_kernel.h"

namespace dc::delegate {
namespace {

constexpr char kMagic[4] = {'D', 'C', 'C', 'V'};
constexpr size_t kOptionsSize = options::conv::kSize;
constexpr uint8_t kOptionsVersion = 1;

class Conv2DKernel : public ConvKernelBase {
 public:
  Status Init(const TfLiteContext& context, const OpNode& node, const KernelConfig& config) override {
    kernel_util::ConvOptions opt;
    Status st =
        kernel_util::ParseConvOptions(node.options, "DcConv2D", kMagic, kOptionsSize, kOptionsVersion, &opt);
    if (!st.ok()) return st;
    SetOptions(opt);
    proto_.in_c = opt.channel_field;
    if (out_c_ <= 0 || proto_.kernel_h <= 0 || proto_.kernel_w <= 0 || proto_.in_c <= 0)
      return Status::Error("options give a non-positive filter shape");
    st = kernels::CheckStridesAndDilations(proto_);
    if (!st.ok()) return st;
    dense_mode_ = config.dense;
    st = kernel_util::DecodeWeights(context, node.inputs[1], {out_c_, proto_.kernel_h, proto_.kernel_w, proto_.in_c},
                                    dense_mode_, config.max_decoded_bytes, &sparse_, &dense_);
    if (!st.ok()) return st;
    return kernel_util::ReadBias(context, node, 2, out_c_, &bias_);
  }

  size_t ScratchFloats(const std::vector<int>& in) const override {
    ConvGeometry g;
    return Geometry(in, &g).ok() ? kernels::Conv2DScratchFloats(g) : 0;
  }

 private:
  void Compute(const ConvGeometry& g, const float* bias, const float* x, float* y, float* scratch,
               ThreadPool* pool) const override {
    if (dense_mode_) kernels::DenseConv2D(dense_.data(), out_c_, bias, g, x, y, activation_, scratch, pool);
    else kernels::SparseConv2D(sparse_, bias, g, x, y, activation_, scratch, pool);
  }
};

bool Supports(const TfLiteContext& context, const TfLiteNode& node) {
  return kernel_util::SupportsNode(context, node, 2, 3, kTfLiteFloat32, kTfLiteFloat32);
}

std::unique_ptr<OpKernel> Create() { return std::make_unique<Conv2DKernel>(); }

}  // namespace

extern const KernelEntry kConv2DKernel;
const KernelEntry kConv2DKernel = {"DcConv2D", Supports, Create};

}  // namespace dc::delegate
