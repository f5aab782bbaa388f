// Helpers shared by the kernels of issue 6 (DcConv2D, DcDepthwiseConv2D, DcGather): reading their fixed
// little-endian custom options and their constant inputs (blob, bias) with clear errors.
#ifndef DC_DELEGATE_KERNELS_CONV2D_UTIL_H_
#define DC_DELEGATE_KERNELS_CONV2D_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "dc_codec.h"
#include "kernel_registry.h"
#include "kernels/conv2d.h"
#include "kernels/fully_connected.h"

namespace dc::delegate::kernel_util {

// Little endian on every target TFLite supports; memcpy avoids unaligned access.
inline int32_t ReadInt32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
std::string ShapeString(const std::vector<T>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Checks magic, size and version of a custom options record; `op` names the op in messages.
inline Status CheckOptionsHeader(const std::vector<uint8_t>& o, const char* op, const char magic[4], size_t size,
                                 uint8_t version) {
  if (o.size() != size || std::memcmp(o.data(), magic, 4) != 0)
    return Status::Error(std::string("custom options are not ") + op + " options (expected " + std::to_string(size) +
                         " bytes starting '" + std::string(magic, 4) + "', got " + std::to_string(o.size()) + " bytes)");
  if (o[4] != version)
    return Status::Error(std::string(op) + " options version " + std::to_string(o[4]) +
                         " is not supported by this delegate (supports " + std::to_string(version) + ")");
  return Status();
}

// "1.5 GiB (1610612736 bytes)": sizes in messages, readable and exact.
inline std::string BytesString(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", bytes >= (uint64_t{1} << 30) ? bytes / 1073741824.0 : bytes / 1048576.0,
                bytes >= (uint64_t{1} << 30) ? "GiB" : "MiB");
  return std::string(buf) + " (" + std::to_string(bytes) + " bytes)";
}

// Refuses a blob whose decoded form (dense floats when `as_dense`, else the sparse form) would take more
// than `max_bytes`: a blob of a few bytes may declare a tensor of billions of zeros.
inline Status CheckDecodeBudget(const codec::BlobInfo& info, bool as_dense, uint64_t max_bytes) {
  const uint64_t need = as_dense ? codec::DenseDecodeBytes(info) : codec::SparseDecodeBytes(info);
  if (need <= max_bytes) return Status();
  return Status::Error("compressed weights of shape " + ShapeString(info.shape) + " decode to " + BytesString(need) +
                       (as_dense ? " of dense float32" : " of sparse form") + ", over the delegate's max_decoded_bytes " +
                       BytesString(max_bytes) + " (raise that option to allow it)");
}

// Decodes the blob of tensor `index` after checking that its shape is `expected` and that decoding fits in
// `max_bytes`: to `sparse` (validated for the kernels' unchecked loops), or to dense float32 in `dense` when
// `as_dense`.
inline Status DecodeWeights(const TfLiteContext& context, int index, const std::vector<int64_t>& expected,
                            bool as_dense, uint64_t max_bytes, codec::SparseMatrix* sparse,
                            std::vector<float>* dense) {
  const TfLiteTensor& blob = context.tensors[index];
  const auto* data = static_cast<const uint8_t*>(blob.data);
  codec::BlobInfo info;
  codec::Status st = codec::ParseInfo(data, blob.bytes, &info);
  if (!st.ok()) return Status::Error("compressed weights are corrupt: " + st.message());
  if (info.shape != expected)
    return Status::Error("compressed weights have shape " + ShapeString(info.shape) + ", options say " +
                         ShapeString(expected));
  Status budget = CheckDecodeBudget(info, as_dense, max_bytes);
  if (!budget.ok()) return budget;
  if (as_dense) {
    dense->resize(static_cast<size_t>(info.num_elements));
    st = codec::DecodeDense(data, blob.bytes, dense->data(), dense->size());
    if (!st.ok()) return Status::Error("compressed weights are corrupt: " + st.message());
    return Status();
  }
  st = codec::DecodeSparse(data, blob.bytes, sparse);
  if (!st.ok()) return Status::Error("compressed weights are corrupt: " + st.message());
  return ValidateSparseMatrix(*sparse);
}

// Copies the optional constant float32 bias input `slot` of `node` (must hold `count` values) into `bias`;
// leaves it empty when the input is absent.
inline Status ReadBias(const TfLiteContext& context, const OpNode& node, size_t slot, int count,
                       std::vector<float>* bias) {
  bias->clear();
  if (node.inputs.size() <= slot || node.inputs[slot] < 0) return Status();
  const TfLiteTensor& t = context.tensors[node.inputs[slot]];
  if (t.bytes != sizeof(float) * static_cast<size_t>(count))
    return Status::Error("bias has " + std::to_string(t.bytes / sizeof(float)) + " values, expected " +
                         std::to_string(count));
  const auto* values = static_cast<const float*>(t.data);
  bias->assign(values, values + count);
  return Status();
}

// The fields DcConv2D and DcDepthwiseConv2D options share (see the layouts atop conv2d.cc and
// depthwise_conv2d.cc): both records differ only in magic, byte 7 and the meaning of the int32 at byte 20.
struct ConvOptions {
  Activation activation = Activation::kNone;
  Padding padding = Padding::kValid;
  int out_c = 0;
  int channel_field = 0;  // byte 20: in_c for DcConv2D, the depth multiplier for DcDepthwiseConv2D
  ConvGeometry proto;     // kernel, strides and dilations; in_c and the input-dependent fields are not set
};

// Checks the header, activation and padding codes of a conv options record and reads the shared fields
// into `out`. The shape checks differ per op (and come before the stride check in their messages' order),
// so the callers make them, then CheckStridesAndDilations.
inline Status ParseConvOptions(const std::vector<uint8_t>& o, const char* op, const char magic[4], size_t size,
                               uint8_t version, ConvOptions* out) {
  Status st = CheckOptionsHeader(o, op, magic, size, version);
  if (!st.ok()) return st;
  if (!IsSupportedActivation(o[5])) return Status::Error("unsupported fused activation " + std::to_string(o[5]));
  if (o[6] > 1) return Status::Error("padding must be 0 (SAME) or 1 (VALID), got " + std::to_string(o[6]));
  out->activation = static_cast<Activation>(o[5]);
  out->padding = static_cast<Padding>(o[6]);
  out->out_c = ReadInt32(&o[8]);
  out->proto.kernel_h = ReadInt32(&o[12]);
  out->proto.kernel_w = ReadInt32(&o[16]);
  out->channel_field = ReadInt32(&o[20]);
  out->proto.stride_h = ReadInt32(&o[24]);
  out->proto.stride_w = ReadInt32(&o[28]);
  out->proto.dilation_h = ReadInt32(&o[32]);
  out->proto.dilation_w = ReadInt32(&o[36]);
  return Status();
}

// Rejects the non-positive strides or dilations an options record may carry.
inline Status CheckStridesAndDilations(const ConvGeometry& g) {
  if (g.stride_h <= 0 || g.stride_w <= 0 || g.dilation_h <= 0 || g.dilation_w <= 0)
    return Status::Error("options give a non-positive stride or dilation");
  return Status();
}

// Completes `proto` (filter, strides, dilations, in_c) into `g` for the NHWC input shape `in`: checks that
// `in` is [N, H, W, proto.in_c], then computes the output size and padding.
inline Status ConvInputGeometry(const std::vector<int>& in, const ConvGeometry& proto, Padding padding,
                                ConvGeometry* g) {
  if (in.size() != 4 || in[3] != proto.in_c)
    return Status::Error("input has shape " + ShapeString(in) + ", the layer expects [N, H, W, " +
                         std::to_string(proto.in_c) + "]");
  *g = proto;
  g->batch = in[0];
  g->in_h = in[1];
  g->in_w = in[2];
  return ComputeConvGeometry(padding, g);
}

// Structural check shared by the Supports functions: `inputs` in [min_inputs, max_inputs], one output of
// float32, input 0 of `input_type` (or `alt_input_type`), input 1 a constant uint8 blob, an optional input 2
// a constant float32 bias.
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
    if (!valid(bias) || context.tensors[bias].type != kTfLiteFloat32 || !IsConstant(context.tensors[bias]))
      return false;
  }
  return true;
}

}  // namespace dc::delegate::kernel_util

#endif  // DC_DELEGATE_KERNELS_CONV2D_UTIL_H_
