// TFLite glue shared by the delegate's kernels (DcFullyConnected, DcConv2D, DcDepthwiseConv2D, DcGather):
// reading their fixed little-endian custom options and their constant inputs (blob, bias) with clear errors.
// The math they run is the kernel library's (ops/kernels), which knows nothing of TFLite.
#ifndef DC_DELEGATE_TFLITE_KERNELS_TFLITE_UTIL_H_
#define DC_DELEGATE_TFLITE_KERNELS_TFLITE_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "dc_codec.h"
#include "kernel_registry.h"
#include "kernels/base.h"
#include "kernels/conv2d.h"
#include "kernels/weights.h"
#include "tflite_kernels/bias.h"
#include "tflite_kernels/options_layout.h"

namespace dc::delegate {

// The kernel library's names the glue uses everywhere.
using kernels::Activation;
using kernels::ConvGeometry;
using kernels::IsSupportedActivation;
using kernels::Padding;

}  // namespace dc::delegate

namespace dc::delegate::kernel_util {

using kernels::BytesString;
using kernels::ShapeString;

// Little endian on every target TFLite supports; memcpy avoids unaligned access.
inline int32_t ReadInt32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Checks magic, size and version of a custom options record against `layout`; `op` names the op in messages.
inline Status CheckOptionsHeader(const std::vector<uint8_t>& o, const char* op, const options::Layout& layout) {
  const size_t size = layout.size();
  if (o.size() != size || std::memcmp(o.data() + options::kMagic, layout.magic(), 4) != 0)
    return Status::Error(std::string("custom options are not ") + op + " options (expected " + std::to_string(size) +
                         " bytes starting '" + std::string(layout.magic(), 4) + "', got " + std::to_string(o.size()) +
                         " bytes)");
  if (o[options::kVersion] != layout.version())
    return Status::Error(std::string(op) + " options version " + std::to_string(o[options::kVersion]) +
                         " is not supported by this delegate (supports " + std::to_string(layout.version()) + ")");
  return Status();
}

// Decodes the blob of tensor `index` after checking that its shape is `expected` and that decoding fits in
// `max_bytes` (parsing it once): to `sparse` (validated for the kernels' unchecked loops), or to dense float32
// in `dense` when `as_dense`, or, when `block` is given and the blob has a block layout, to `block` (validated;
// *got_block then true).
inline Status DecodeWeights(const TfLiteContext& context, int index, const std::vector<int64_t>& expected,
                            bool as_dense, uint64_t max_bytes, codec::SparseMatrix* sparse,
                            std::vector<float>* dense, codec::BlockSparseMatrix* block = nullptr,
                            bool* got_block = nullptr) {
  const TfLiteTensor& blob = context.tensors[index];
  kernels::WeightsSpec spec;
  spec.shape = expected;
  spec.dense = as_dense;
  spec.accept_block = block != nullptr;
  spec.max_bytes = max_bytes;
  codec::BlobInfo info;
  const kernels::WeightsResult r =
      kernels::LoadWeights(static_cast<const uint8_t*>(blob.data), blob.bytes, spec, sparse, dense, &info, block);
  if (got_block != nullptr) *got_block = r.block;
  switch (r.stage) {
    case kernels::WeightsStage::kOk:
      return Status();
    case kernels::WeightsStage::kShape:
      return Status::Error("compressed weights have shape " + ShapeString(info.shape) + ", options say " +
                           ShapeString(expected));
    case kernels::WeightsStage::kBudget:
      return Status::Error("compressed weights of shape " + ShapeString(info.shape) + " decode to " +
                           BytesString(r.needed_bytes) +
                           (as_dense ? " of dense float32" : kernels::DecodesToBlocks(info, spec) ? " of block form"
                                                                                                 : " of sparse form") +
                           ", over the delegate's max_decoded_bytes " + BytesString(max_bytes) +
                           " (raise that option to allow it)");
    case kernels::WeightsStage::kInvalid:
      return Status::Error(r.message);
    default:
      return Status::Error("compressed weights are corrupt: " + r.message);
  }
}

// Reads the optional constant bias input `slot` of `node` (FLOAT32 or FLOAT16, `count` values) into `bias`
// as float32, once at Init; leaves it empty when the input is absent.
inline Status ReadBias(const TfLiteContext& context, const OpNode& node, size_t slot, int count,
                       std::vector<float>* bias) {
  bias->clear();
  if (node.inputs.size() <= slot || node.inputs[slot] < 0) return Status();
  const TfLiteTensor& t = context.tensors[node.inputs[slot]];
  return BiasValues(t.type, t.data, t.bytes, count, bias);
}

// The fields DcConv2D and DcDepthwiseConv2D options share (see the layouts in conv2d.cc and
// depthwise_conv2d.cc): both records differ only in magic, byte 7 and the meaning of the int32 at byte 20.
struct ConvOptions {
  Activation activation = Activation::kNone;
  Padding padding = Padding::kValid;
  int out_c = 0;
  int channel_field = 0;  // in_c for DcConv2D, the depth multiplier for DcDepthwiseConv2D
  ConvGeometry proto;     // kernel, strides and dilations; in_c and the input-dependent fields are not set
};

// Byte offsets of ConvOptions' fields in one op's record.
struct ConvFieldOffsets {
  size_t activation, padding, out_c, kernel_h, kernel_w, channel, stride_h, stride_w, dilation_h, dilation_w;
};

// The offsets of ConvOptions' fields in `layout`, whose int32 `channel_field` fills ConvOptions::channel_field.
// For constant expressions, as Layout::Offset.
constexpr ConvFieldOffsets ConvOffsetsOf(const options::Layout& layout, const char* channel_field) {
  return {layout.Offset("fused_activation"), layout.Offset("padding"),  layout.Offset("out_channels"),
          layout.Offset("kernel_h"),         layout.Offset("kernel_w"), layout.Offset(channel_field),
          layout.Offset("stride_h"),         layout.Offset("stride_w"), layout.Offset("dilation_h"),
          layout.Offset("dilation_w")};
}

// Checks the header, activation and padding codes of a conv options record and reads the shared fields
// into `out`. The shape checks differ per op (and come before the stride check in their messages' order),
// so the callers make them, then kernels::CheckStridesAndDilations.
inline Status ParseConvOptions(const std::vector<uint8_t>& o, const char* op, const options::Layout& layout,
                               const ConvFieldOffsets& at, ConvOptions* out) {
  Status st = CheckOptionsHeader(o, op, layout);
  if (!st.ok()) return st;
  if (!IsSupportedActivation(o[at.activation]))
    return Status::Error("unsupported fused activation " + std::to_string(o[at.activation]));
  if (o[at.padding] > 1)
    return Status::Error("padding must be 0 (SAME) or 1 (VALID), got " + std::to_string(o[at.padding]));
  out->activation = static_cast<Activation>(o[at.activation]);
  out->padding = static_cast<Padding>(o[at.padding]);
  out->out_c = ReadInt32(&o[at.out_c]);
  out->proto.kernel_h = ReadInt32(&o[at.kernel_h]);
  out->proto.kernel_w = ReadInt32(&o[at.kernel_w]);
  out->channel_field = ReadInt32(&o[at.channel]);
  out->proto.stride_h = ReadInt32(&o[at.stride_h]);
  out->proto.stride_w = ReadInt32(&o[at.stride_w]);
  out->proto.dilation_h = ReadInt32(&o[at.dilation_h]);
  out->proto.dilation_w = ReadInt32(&o[at.dilation_w]);
  return Status();
}

// Structural check shared by the Supports functions: `inputs` in [min_inputs, max_inputs], one output of
// float32, input 0 of `input_type` (or `alt_input_type`), input 1 a constant uint8 blob, an optional input 2
// a constant bias. The bias's type and size are checked at Init (ReadBias), so that a wrong one is an error
// naming the op rather than an unclaimed node.
inline bool SupportsNode(const TfLiteContext& context, const TfLiteNode& node, int min_inputs, int max_inputs,
                         int input_type, int alt_input_type) {
  if (node.inputs == nullptr || node.outputs == nullptr) return false;
  if (node.inputs->size < min_inputs || node.inputs->size > max_inputs || node.outputs->size != 1) return false;
  const int n = static_cast<int>(context.tensors_size);
  auto valid = [n](int index) { return index >= 0 && index < n; };
  const int x = node.inputs->data[0], blob = node.inputs->data[1], out = node.outputs->data[0];
  if (!valid(x) || !valid(blob) || !valid(out)) return false;
  const int xt = context.tensors[x].type;
  if ((xt != input_type && xt != alt_input_type) || context.tensors[out].type != kTfLiteFloat32) return false;
  if (context.tensors[blob].type != kTfLiteUInt8 || !IsConstant(context.tensors[blob])) return false;
  if (node.inputs->size >= 3 && node.inputs->data[2] >= 0) {
    const int bias = node.inputs->data[2];
    if (!valid(bias) || !IsConstant(context.tensors[bias])) return false;
  }
  return true;
}

// The Supports of an op over float32 activations with a blob and an optional bias (FC, conv, depthwise).
inline bool SupportsFloatOp(const TfLiteContext& context, const TfLiteNode& node) {
  return SupportsNode(context, node, 2, 3, kTfLiteFloat32, kTfLiteFloat32);
}

}  // namespace dc::delegate::kernel_util

#endif  // DC_DELEGATE_TFLITE_KERNELS_TFLITE_UTIL_H_
