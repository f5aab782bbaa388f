// DcFullyConnected: TFLite's FULLY_CONNECTED with its float weights replaced by a dc_codec blob.
//
// Inputs: 0 activations (float32, [..., in]), 1 blob (constant uint8), 2 bias (constant float32 [out],
// optional). Custom options (16 bytes, little endian, written by dc_keras/export/options.py):
//   0  char[4] "DCFC"   4  uint8 version (1)   5  uint8 fused activation (TFLite ActivationFunctionType)
//   6  uint8 keep_num_dims   7  uint8 reserved (0)   8  int32 units (out)   12  int32 input size (in)
#include <algorithm>
#include <cstring>
#include <string>

#include "kernel_registry.h"
#include "kernels/conv2d_util.h"
#include "kernels/fully_connected.h"
#include "thread_pool.h"

namespace dc::delegate {
namespace {

constexpr char kMagic[4] = {'D', 'C', 'F', 'C'};
constexpr size_t kOptionsSize = 16;
constexpr uint8_t kOptionsVersion = 1;

int32_t ReadInt32(const uint8_t* p) {
  // Little endian on every target TFLite supports; memcpy avoids unaligned access.
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::string CodecError(const std::string& what, const codec::Status& status) {
  return what + ": " + status.message();
}

class FullyConnectedKernel : public OpKernel {
 public:
  Status Init(const TfLiteContext& context, const OpNode& node, const KernelConfig& config) override {
    const std::vector<uint8_t>& o = node.options;
    if (o.size() != kOptionsSize || std::memcmp(o.data(), kMagic, 4) != 0)
      return Status::Error("custom options are not DcFullyConnected options (expected 16 bytes starting 'DCFC')");
    if (o[4] != kOptionsVersion)
      return Status::Error("DcFullyConnected options version " + std::to_string(o[4]) +
                           " is not supported by this delegate (supports " + std::to_string(kOptionsVersion) + ")");
    if (!IsSupportedActivation(o[5]))
      return Status::Error("unsupported fused activation " + std::to_string(o[5]));
    activation_ = static_cast<Activation>(o[5]);
    keep_num_dims_ = o[6] != 0;
    units_ = ReadInt32(o.data() + 8);
    input_size_ = ReadInt32(o.data() + 12);
    if (units_ <= 0 || input_size_ <= 0) return Status::Error("options give a non-positive weight shape");

    const TfLiteTensor& blob = context.tensors[node.inputs[1]];
    const auto* data = static_cast<const uint8_t*>(blob.data);
    codec::BlobInfo info;
    codec::Status st = codec::ParseInfo(data, blob.bytes, &info);
    if (!st.ok()) return Status::Error(CodecError("compressed weights are corrupt", st));
    if (info.shape.size() != 2 || info.shape[0] != units_ || info.shape[1] != input_size_)
      return Status::Error("compressed weights have shape " + ShapeString(info.shape) + ", options say [" +
                           std::to_string(units_) + ", " + std::to_string(input_size_) + "]");
    Status budget = kernel_util::CheckDecodeBudget(info, config.dense, config.max_decoded_bytes);
    if (!budget.ok()) return budget;
    if (config.dense) {
      dense_.resize(static_cast<size_t>(units_) * input_size_);
      st = codec::DecodeDense(data, blob.bytes, dense_.data(), dense_.size());
      if (!st.ok()) return Status::Error(CodecError("compressed weights are corrupt", st));
    } else {
      codec::SparseMatrix sparse;
      st = codec::DecodeSparse(data, blob.bytes, &sparse);
      if (!st.ok()) return Status::Error(CodecError("compressed weights are corrupt", st));
      Status built = weights_.Init(std::move(sparse));
      if (!built.ok()) return built;
    }
    dense_mode_ = config.dense;
    if (node.inputs.size() > 2 && node.inputs[2] >= 0) {
      const TfLiteTensor& bias = context.tensors[node.inputs[2]];
      if (bias.bytes != sizeof(float) * static_cast<size_t>(units_))
        return Status::Error("bias has " + std::to_string(bias.bytes / sizeof(float)) + " values, expected " +
                             std::to_string(units_));
      bias_.assign(static_cast<const float*>(bias.data), static_cast<const float*>(bias.data) + units_);
    }
    return Status();
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

  void Run(const void* input, const std::vector<int>& in, void* output, float* scratch,
           ThreadPool* pool) const override {
    const int64_t batch = NumElements(in) / input_size_;
    const float* bias = bias_.empty() ? nullptr : bias_.data();
    const auto* x = static_cast<const float*>(input);
    auto* y = static_cast<float*>(output);
    if (dense_mode_) DenseFullyConnected(dense_.data(), units_, input_size_, bias, x, batch, y, activation_, pool);
    else weights_.Run(bias, x, batch, y, activation_, scratch, pool);
  }

  size_t ResidentBytes() const override {
    return dense_mode_ ? dense_.capacity() * sizeof(float) : weights_.ResidentBytes();
  }

 private:
  static std::string ShapeString(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }

  Activation activation_ = Activation::kNone;
  bool keep_num_dims_ = false;
  bool dense_mode_ = false;
  int units_ = 0, input_size_ = 0;
  FullyConnectedWeights weights_;  // sparse mode
  std::vector<float> dense_;
  std::vector<float> bias_;
};

bool Supports(const TfLiteContext& context, const TfLiteNode& node) {
  if (node.inputs == nullptr || node.outputs == nullptr) return false;
  if (node.inputs->size < 2 || node.inputs->size > 3 || node.outputs->size != 1) return false;
  const int n = static_cast<int>(context.tensors_size);
  auto valid = [n](int index) { return index >= 0 && index < n; };
  const int x = node.inputs->data[0], blob = node.inputs->data[1], out = node.outputs->data[0];
  if (!valid(x) || !valid(blob) || !valid(out)) return false;
  if (context.tensors[x].type != kTfLiteFloat32 || context.tensors[out].type != kTfLiteFloat32) return false;
  if (context.tensors[blob].type != kTfLiteUInt8 || !IsConstant(context.tensors[blob])) return false;
  if (node.inputs->size == 3 && node.inputs->data[2] >= 0) {
    const int bias = node.inputs->data[2];
    if (!valid(bias) || context.tensors[bias].type != kTfLiteFloat32 || !IsConstant(context.tensors[bias]))
      return false;
  }
  return true;
}

std::unique_ptr<OpKernel> Create() { return std::make_unique<FullyConnectedKernel>(); }

}  // namespace

extern const KernelEntry kFullyConnectedKernel;
const KernelEntry kFullyConnectedKernel = {"DcFullyConnected", Supports, Create};

}  // namespace dc::delegate
