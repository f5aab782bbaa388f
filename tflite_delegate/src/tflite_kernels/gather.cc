// DcGather: TFLite's GATHER (axis 0, batch_dims 0) of a constant embedding table replaced by a dc_codec blob
// (math in ops/kernels/gather.h).
//
// Inputs (reordered by the exporter so that the runtime input comes first, as the kernel contract wants):
// 0 indices (int32 or int64, any shape), 1 blob (constant uint8; table [vocab, dim]). Output: float32
// indices.shape + [dim]. Custom options: kLayout below (16 bytes, little endian, written by
// dc_keras/export/conv_rewriters.py).
#include <string>

#include "kernel_registry.h"
#include "tflite_kernels/tflite_util.h"
#include "kernels/gather.h"

namespace dc::delegate {
namespace {

using kernel_util::ReadInt32;

// The options record, as op_specs.GATHER declares it.
constexpr options::Field kFields[] = {
    {"reserved0", 'B'}, {"reserved1", 'B'}, {"reserved2", 'B'}, {"vocab", 'i'}, {"dim", 'i'}};
constexpr options::Layout kLayout("DCGA", 1, kFields);
constexpr size_t kReserved = kLayout.Offset("reserved0"), kVocab = kLayout.Offset("vocab"),
                 kDim = kLayout.Offset("dim");

class GatherKernel : public OpKernel {
 public:
  Status Init(const TfLiteContext& context, const OpNode& node, const KernelConfig& config) override {
    const std::vector<uint8_t>& o = node.options;
    Status st = kernel_util::CheckOptionsHeader(o, "DcGather", kLayout);
    if (!st.ok()) return st;
    for (size_t i = kReserved; i < kVocab; ++i)
      if (o[i] != 0) return Status::Error("reserved option bytes must be 0");
    vocab_ = ReadInt32(&o[kVocab]);
    dim_ = ReadInt32(&o[kDim]);
    if (vocab_ <= 0 || dim_ <= 0) return Status::Error("options give a non-positive table shape");
    index_type_ = context.tensors[node.inputs[0]].type;
    if (index_type_ != kTfLiteInt32 && index_type_ != kTfLiteInt64)
      return Status::Error("indices must be int32 or int64");
    dense_mode_ = config.dense;
    max_decoded_bytes_ = config.max_decoded_bytes;
    // Every lookup writes whole decoded rows: one row alone must fit the decode budget.
    const uint64_t row_bytes = sizeof(float) * static_cast<uint64_t>(dim_);
    if (row_bytes > config.max_decoded_bytes)
      return Status::Error("one table row of " + std::to_string(dim_) + " floats is " +
                           kernel_util::BytesString(row_bytes) + ", over the delegate's max_decoded_bytes " +
                           kernel_util::BytesString(config.max_decoded_bytes) + " (raise that option to allow it)");
    return kernel_util::DecodeWeights(context, node.inputs[1], {vocab_, dim_}, dense_mode_, config.max_decoded_bytes,
                                      &sparse_, &dense_);
  }

  Status OutputShape(const std::vector<int>& in, std::vector<int>* out) const override {
    // The output is decoded rows, one per index: it counts against the decode budget as a whole (TFLite's
    // arena fails without a message on a tensor it cannot allocate).
    const int64_t count = NumElements(in);
    const uint64_t out_bytes = sizeof(float) * static_cast<uint64_t>(count) * static_cast<uint64_t>(dim_);
    if (count < 0 || (count > 0 && out_bytes / count / sizeof(float) != static_cast<uint64_t>(dim_)) ||
        out_bytes > max_decoded_bytes_)
      return Status::Error("indices of shape " + kernel_util::ShapeString(in) + " gather " + std::to_string(count) +
                           " rows of " + std::to_string(dim_) + " floats, " + kernel_util::BytesString(out_bytes) +
                           ", over the delegate's max_decoded_bytes " + kernel_util::BytesString(max_decoded_bytes_) +
                           " (raise that option to allow it)");
    *out = in;
    out->push_back(dim_);
    return Status();
  }

  int OutputType() const override { return kTfLiteFloat32; }

  size_t ScratchFloats(const std::vector<int>&) const override { return 0; }

  // An index outside [0, vocab) fails the invoke, negative ones included, as stock TFLite's GATHER does.
  Status Run(const void* input, const std::vector<int>& in, void* output, float*, ThreadPool*) const override {
    if (index_type_ == kTfLiteInt32) return Gather(static_cast<const int32_t*>(input), NumElements(in), output);
    return Gather(static_cast<const int64_t*>(input), NumElements(in), output);
  }

  size_t ResidentBytes() const override {
    return dense_mode_ ? dense_.capacity() * sizeof(float) : sparse_.ResidentBytes();
  }

 private:
  template <typename Index>
  Status Gather(const Index* indices, int64_t count, void* output) const {
    auto* y = static_cast<float*>(output);
    return dense_mode_ ? kernels::DenseGather(dense_.data(), vocab_, dim_, indices, count, y)
                       : kernels::SparseGather(sparse_, indices, count, y);
  }

  int vocab_ = 0, dim_ = 0;
  uint64_t max_decoded_bytes_ = codec::kDefaultMaxDecodedBytes;
  int index_type_ = kTfLiteInt32;
  bool dense_mode_ = false;
  codec::SparseMatrix sparse_;
  std::vector<float> dense_;
};

bool Supports(const TfLiteContext& context, const TfLiteNode& node) {
  return kernel_util::SupportsNode(context, node, 2, 2, kTfLiteInt32, kTfLiteInt64);
}

const KernelRegistrar kRegistrar({"DcGather", Supports, CreateKernel<GatherKernel>, &kLayout});

}  // namespace

}  // namespace dc::delegate
