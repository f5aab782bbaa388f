// The bias input of the dc ops that have one (DcFullyConnected, DcConv2D, DcDepthwiseConv2D): a constant
// FLOAT32 or FLOAT16 tensor of one value per output channel, widened to float32 once at Init. Free of the
// TFLite context, so that the kernel tests (tflite_delegate/tests/bias_test.cc) run it under the sanitizers.
#ifndef DC_DELEGATE_TFLITE_KERNELS_BIAS_H_
#define DC_DELEGATE_TFLITE_KERNELS_BIAS_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dc_codec.h"
#include "dc_delegate/tflite_abi.h"
#include "status.h"

namespace dc::delegate::kernel_util {

// The name of TfLiteType `type` in messages ("FLOAT32", "INT8", ...; the number for types the delegate never
// expects).
inline std::string TypeName(int type) {
  switch (type) {
    case kTfLiteFloat32: return "FLOAT32";
    case kTfLiteFloat16: return "FLOAT16";
    case kTfLiteInt32: return "INT32";
    case kTfLiteUInt8: return "UINT8";
    case kTfLiteInt64: return "INT64";
    case kTfLiteInt8: return "INT8";
    default: return "type " + std::to_string(type);
  }
}

// Converts a constant bias of TfLiteType `type` (`bytes` bytes at `data`) into `count` float32 values in
// `bias`. FLOAT32 is copied, FLOAT16 (the exporter's default: half the bytes) widened exactly; any other type,
// or a byte size that is not `count` values of that type, is an error. `data` needs no alignment.
inline Status BiasValues(int type, const void* data, size_t bytes, int count, std::vector<float>* bias) {
  bias->clear();
  size_t width = 0;
  if (type == kTfLiteFloat32) width = sizeof(float);
  else if (type == kTfLiteFloat16) width = sizeof(uint16_t);
  else return Status::Error("bias is " + TypeName(type) + ", must be FLOAT32 or FLOAT16");
  if (count < 0 || bytes != width * static_cast<size_t>(count))
    return Status::Error("bias has " + std::to_string(bytes / width) + " values (" + std::to_string(bytes) + " bytes of " +
                         TypeName(type) + "), expected " + std::to_string(count));
  if (count > 0 && data == nullptr) return Status::Error("bias has no data");
  bias->resize(static_cast<size_t>(count));
  const auto* bytes_in = static_cast<const uint8_t*>(data);
  if (type == kTfLiteFloat32) {
    if (count > 0) std::memcpy(bias->data(), bytes_in, bytes);
    return Status();
  }
  for (size_t i = 0; i < static_cast<size_t>(count); ++i) {
    uint16_t half;
    std::memcpy(&half, bytes_in + 2 * i, sizeof half);  // little endian, as the .tflite stores it
    (*bias)[i] = codec::HalfToFloat(half);
  }
  return Status();
}

}  // namespace dc::delegate::kernel_util

#endif  // DC_DELEGATE_TFLITE_KERNELS_BIAS_H_
