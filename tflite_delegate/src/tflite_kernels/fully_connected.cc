// DcFullyConnected: TFLite's FULLY_CONNECTED with its float weights replaced by a dc_codec blob.
//
// Inputs: 0 activations (float32, [..., in]), 1 blob (constant uint8), 2 bias (constant float32 or float16 [out],
// optional). Custom options: kLayout below (16 bytes, little endian, written by dc_keras/export/options.py);
// fused_activation is TFLite's ActivationFunctionType, units the output size.
#include <algorithm>
#include <cstring>
#include <string>

#include "kernel_registry.h"
#include "kernels/fully_connected.h"
#include "thread_pool.h"
#include "tflite_kernels/tflite_util.h"

namespace dc::delegate {
namespace {

// The options record, as op_specs.FULLY_CONNECTED declares it.
constexpr options::Field kFields[] = {
    {"fused_activation", 'B'}, {"keep_num_dims", 'B'}, {"reserved", 'B'}, {"units", 'i'}, {"input_size", 'i'}};
constexpr options::Layout kLayout("DCFC", 1, kFields);
constexpr size_t kActivation = kLayout.Offset("fused_activation"), kKeepNumDims = kLayout.Offset("keep_num_dims"),
                 kUnits = kLayout.Offset("units"), kInputSize = kLayout.Offset("input_size");

using kernel_util::ReadInt32;

class FullyConnectedKernel : public OpKernel {
 public:
  Status Init(const TfLiteContext& context, const OpNode& node, const KernelConfig& config) override {
    const std::vector<uint8_t>& o = node.options;
    Status st = kernel_util::CheckOptionsHeader(o, "DcFullyConnected", kLayout);
    if (!st.ok()) return st;
    if (!IsSupportedActivation(o[kActivation]))
      return Status::Error("unsupported fused activation " + std::to_string(o[kActivation]));
    activation_ = static_cast<Activation>(o[kActivation]);
    keep_num_dims_ = o[kKeepNumDims] != 0;
    units_ = ReadInt32(o.data() + kUnits);
    input_size_ = ReadInt32(o.data() + kInputSize);
    if (units_ <= 0 || input_size_ <= 0) return Status::Error("options give a non-positive weight shape");

    codec::SparseMatrix sparse;
    codec::BlockSparseMatrix block;
    bool got_block = false;
    st = kernel_util::DecodeWeights(context, node.inputs[1], {units_, input_size_}, config.dense,
                                    config.max_decoded_bytes, &sparse, &dense_, &block, &got_block);
    if (!st.ok()) return st;
    if (!config.dense) {
      st = got_block ? weights_.Init(std::move(block)) : weights_.Init(std::move(sparse));
      if (!st.ok()) return st;
    }
    dense_mode_ = config.dense;
    return kernel_util::ReadBias(context, node, 2, units_, &bias_);
  }

  Status OutputShape(const std::vector<int>& in, std::vector<int>* out) const override {
    if (in.empty() || in.back() != input_size_)
      return Status::Error("input's last dimension is " + (in.empty() ? std::string("missing") : std::to_string(in.back())) +
                           ", the layer expects " + std::to_string(input_size_));
    if (keep_num_dims_) {
      *out = in;
      out->back() = units_;
    } else {
      *out = {static_cast<int>(NumElements(in) / input_size_), units_};
    }
    return Status();
  }

  int OutputType() const override { return kTfLiteFloat32; }

  size_t ScratchFloats(const std::vector<int>& in) const override {
    return dense_mode_ ? 0 : weights_.ScratchFloats(NumElements(in) / input_size_);
  }

  Status Run(const void* input, const std::vector<int>& in, void* output, float* scratch,
             ThreadPool* pool) const override {
    const int64_t batch = NumElements(in) / input_size_;
    const float* bias = bias_.empty() ? nullptr : bias_.data();
    const auto* x = static_cast<const float*>(input);
    auto* y = static_cast<float*>(output);
    if (dense_mode_)
      kernels::DenseFullyConnected(dense_.data(), units_, input_size_, bias, x, batch, y, activation_, pool);
    else weights_.Run(bias, x, batch, y, activation_, scratch, pool);
    return Status();
  }

  size_t ResidentBytes() const override {
    return dense_mode_ ? dense_.capacity() * sizeof(float) : weights_.ResidentBytes();
  }

  const char* FormName() const override { return dense_mode_ ? "dense" : weights_.form_name(); }

 private:
  Activation activation_ = Activation::kNone;
  bool keep_num_dims_ = false;
  bool dense_mode_ = false;
  int units_ = 0, input_size_ = 0;
  kernels::FullyConnectedWeights weights_;  // sparse mode
  std::vector<float> dense_;
  std::vector<float> bias_;
};

const KernelRegistrar kRegistrar({"DcFullyConnected", kernel_util::SupportsFloatOp, CreateKernel<FullyConnectedKernel>, &kLayout});

}  // namespace

}  // namespace dc::delegate
