// DcDepthwiseConv2D: TFLite's DEPTHWISE_CONV_2D with its float filter replaced by a dc_codec blob (math in
// kernels/depthwise_conv2d.h).
//
// Inputs: 0 activations (float32 [N, H, W, in_c]), 1 blob (constant uint8), 2 bias (constant float32 or float16 [out_c],
// optional). Custom options: kLayout below (40 bytes, little endian, written by
// dc_keras/export/conv_rewriters.py). Field "layout" is the blob layout: 1 = transposed, blob shape
// [out_c, kh * kw] (blob[oc, ky * kw + kx] is TFLite's filter[0, ky, kx, oc]), the only layout of version 1;
// depth_multiplier is out_c / in_c.
#include <string>

#include "kernel_registry.h"
#include "kernels/depthwise_conv2d.h"
#include "tflite_kernels/conv_kernel.h"

namespace dc::delegate {
namespace {

// The options record, as op_specs.DEPTHWISE_CONV_2D declares it.
constexpr options::Field kFields[] = {
    {"fused_activation", 'B'}, {"padding", 'B'},  {"layout", 'B'},           {"out_channels", 'i'},
    {"kernel_h", 'i'},         {"kernel_w", 'i'}, {"depth_multiplier", 'i'}, {"stride_h", 'i'},
    {"stride_w", 'i'},         {"dilation_h", 'i'}, {"dilation_w", 'i'}};
constexpr options::Layout kLayout("DCDW", 1, kFields);
constexpr kernel_util::ConvFieldOffsets kOffsets = kernel_util::ConvOffsetsOf(kLayout, "depth_multiplier");
constexpr size_t kBlobLayout = kLayout.Offset("layout");
constexpr uint8_t kLayoutTransposed = 1;

class DepthwiseConv2DKernel : public ConvKernelBase {
 public:
  Status Init(const TfLiteContext& context, const OpNode& node, const KernelConfig& config) override {
    kernel_util::ConvOptions opt;
    Status st = kernel_util::ParseConvOptions(node.options, "DcDepthwiseConv2D", kLayout, kOffsets, &opt);
    if (!st.ok()) return st;
    if (node.options[kBlobLayout] != kLayoutTransposed)
      return Status::Error("blob layout " + std::to_string(node.options[kBlobLayout]) +
                           " is not supported (this delegate reads layout 1: [out_c, kh * kw])");
    SetOptions(opt);
    multiplier_ = opt.channel_field;
    if (out_c_ <= 0 || proto_.kernel_h <= 0 || proto_.kernel_w <= 0 || multiplier_ <= 0 || out_c_ % multiplier_)
      return Status::Error("options give an invalid filter shape (out_c " + std::to_string(out_c_) + ", kernel " +
                           std::to_string(proto_.kernel_h) + "x" + std::to_string(proto_.kernel_w) +
                           ", multiplier " + std::to_string(multiplier_) + ")");
    st = kernels::CheckStridesAndDilations(proto_);
    if (!st.ok()) return st;
    if (int64_t{proto_.kernel_h} * proto_.kernel_w > (int64_t{1} << 20))
      return Status::Error("kernel too large");
    proto_.in_c = out_c_ / multiplier_;
    dense_mode_ = config.dense;
    const int taps = proto_.kernel_h * proto_.kernel_w;
    std::vector<float> transposed;
    st = kernel_util::DecodeWeights(context, node.inputs[1], {out_c_, taps}, dense_mode_,
                                    config.max_decoded_bytes, &sparse_, &transposed);
    if (!st.ok()) return st;
    if (dense_mode_) {  // back to tap-major so the dense loop runs contiguously over channels
      dense_.resize(transposed.size());
      for (int oc = 0; oc < out_c_; ++oc)
        for (int t = 0; t < taps; ++t) dense_[static_cast<size_t>(t) * out_c_ + oc] = transposed[static_cast<size_t>(oc) * taps + t];
    }
    return kernel_util::ReadBias(context, node, 2, out_c_, &bias_);
  }

  size_t ScratchFloats(const std::vector<int>&) const override { return 0; }

 private:
  void Compute(const ConvGeometry& g, const float* bias, const float* x, float* y, float*,
               ThreadPool* pool) const override {
    if (dense_mode_) kernels::DenseDepthwiseConv2D(dense_.data(), multiplier_, bias, g, x, y, activation_, pool);
    else kernels::SparseDepthwiseConv2D(sparse_, multiplier_, bias, g, x, y, activation_, pool);
  }

  int multiplier_ = 1;  // dense_ is tap-major [kh * kw, out_c] here
};

const KernelRegistrar kRegistrar({"DcDepthwiseConv2D", kernel_util::SupportsFloatOp, CreateKernel<DepthwiseConv2DKernel>, &kLayout});

}  // namespace

}  // namespace dc::delegate
