// DcConv2D: TFLite's CONV_2D with its float filter replaced by a dc_codec blob (ops/kernels/conv2d.h has the math).
//
// Inputs: 0 activations (float32 [N, H, W, in_c]), 1 blob (constant uint8; filter [out_c, kh, kw, in_c]),
// 2 bias (constant float32 [out_c], optional). Custom options: kLayout below (40 bytes, little endian, written
// by dc_keras/export/conv_rewriters.py); padding is TFLite's Padding (0 SAME, 1 VALID).
#include <string>

#include "kernel_registry.h"
#include "kernels/conv2d.h"
#include "tflite_kernels/conv_kernel.h"

namespace dc::delegate {
namespace {

// The options record, as op_specs.CONV_2D declares it.
constexpr options::Field kFields[] = {
    {"fused_activation", 'B'}, {"padding", 'B'},  {"reserved", 'B'}, {"out_channels", 'i'},
    {"kernel_h", 'i'},         {"kernel_w", 'i'}, {"in_channels", 'i'}, {"stride_h", 'i'},
    {"stride_w", 'i'},         {"dilation_h", 'i'}, {"dilation_w", 'i'}};
constexpr options::Layout kLayout("DCCV", 1, kFields);
constexpr kernel_util::ConvFieldOffsets kOffsets = kernel_util::ConvOffsetsOf(kLayout, "in_channels");

class Conv2DKernel : public ConvKernelBase {
 public:
  Status Init(const TfLiteContext& context, const OpNode& node, const KernelConfig& config) override {
    kernel_util::ConvOptions opt;
    Status st = kernel_util::ParseConvOptions(node.options, "DcConv2D", kLayout, kOffsets, &opt);
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

const KernelRegistrar kRegistrar({"DcConv2D", kernel_util::SupportsFloatOp, CreateKernel<Conv2DKernel>, &kLayout});

}  // namespace

}  // namespace dc::delegate
