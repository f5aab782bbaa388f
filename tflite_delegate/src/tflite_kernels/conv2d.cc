// DcConv2D: TFLite's CONV_2D with its float filter replaced by a dc_codec blob (ops/kernels/conv2d.h has the math).
//
// Inputs: 0 activations (float32 [N, H, W, in_c]), 1 blob (constant uint8; filter [out_c, kh, kw, in_c]; a
// block-layout blob runs on the block loops, kernels/block_conv2d.h),
// 2 bias (constant float32 or float16 [out_c], optional). Custom options: kLayout below (40 bytes, little endian, written
// by dc_keras/export/conv_rewriters.py); padding is TFLite's Padding (0 SAME, 1 VALID).
#include <string>
#include <utility>

#include "kernel_registry.h"
#include "kernels/block_conv2d.h"
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
    codec::BlockSparseMatrix block;
    st = kernel_util::DecodeWeights(context, node.inputs[1], {out_c_, proto_.kernel_h, proto_.kernel_w, proto_.in_c},
                                    dense_mode_, config.max_decoded_bytes, &sparse_, &dense_, &block, &block_mode_);
    if (!st.ok()) return st;
    if (block_mode_) {
      st = block_.Init(std::move(block));
      if (!st.ok()) return st;
    }
    return kernel_util::ReadBias(context, node, 2, out_c_, &bias_);
  }

  size_t ScratchFloats(const std::vector<int>& in) const override {
    ConvGeometry g;
    if (!Geometry(in, &g).ok()) return 0;
    return block_mode_ ? kernels::BlockConv2DScratchFloats(block_, g) : kernels::Conv2DScratchFloats(g);
  }

  size_t ResidentBytes() const override {
    return block_mode_ ? block_.ResidentBytes() : ConvKernelBase::ResidentBytes();
  }

  const char* FormName() const override { return dense_mode_ ? "dense" : block_mode_ ? "block" : "sparse"; }

 private:
  void Compute(const ConvGeometry& g, const float* bias, const float* x, float* y, float* scratch,
               ThreadPool* pool) const override {
    if (dense_mode_) kernels::DenseConv2D(dense_.data(), out_c_, bias, g, x, y, activation_, scratch, pool);
    else if (block_mode_) kernels::BlockConv2D(block_, bias, g, x, y, activation_, scratch, pool);
    else kernels::SparseConv2D(sparse_, bias, g, x, y, activation_, scratch, pool);
  }

  bool block_mode_ = false;  // the blob has a block layout and decoded to block_ (never in dense mode)
  kernels::BlockFullyConnectedWeights block_;
};

const KernelRegistrar kRegistrar({"DcConv2D", kernel_util::SupportsFloatOp, CreateKernel<Conv2DKernel>, &kLayout});

}  // namespace

}  // namespace dc::delegate
