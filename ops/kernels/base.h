// Basics of the kernel-math library shared by the TFLite delegate and the TensorFlow ops: the error type,
// the fused activations, and readable sizes for messages. No TensorFlow, no TFLite.
#ifndef DC_KERNELS_BASE_H_
#define DC_KERNELS_BASE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "dc_codec.h"

namespace dc::kernels {

// Ok, or an error with a message for the user; the codec's type, so codec errors pass through unchanged.
using Status = codec::Status;

// TFLite's ActivationFunctionType values that the kernels fuse.
enum class Activation : uint8_t { kNone = 0, kRelu = 1, kReluN1To1 = 2, kRelu6 = 3, kTanh = 4 };

// True for activation codes (TFLite ActivationFunctionType) the kernels support.
inline bool IsSupportedActivation(int code) { return code >= 0 && code <= static_cast<int>(Activation::kTanh); }

// act(v) for one output value. Inline in this header because every kernel's inner loop (FC, conv,
// depthwise, including their AVX2 clones) calls it per element and must be able to inline it.
inline float Activate(float v, Activation act) {
  switch (act) {
    case Activation::kNone:
      return v;
    case Activation::kRelu:
      return v < 0.f ? 0.f : v;
    case Activation::kReluN1To1:
      return std::min(1.f, std::max(-1.f, v));
    case Activation::kRelu6:
      return std::min(6.f, std::max(0.f, v));
    case Activation::kTanh:
      return std::tanh(v);
  }
  return v;
}

// "[2, 3]": a shape in messages.
template <typename T>
std::string ShapeString(const std::vector<T>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// "1.5 GiB (1610612736 bytes)": sizes in messages, readable and exact.
inline std::string BytesString(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", bytes >= (uint64_t{1} << 30) ? bytes / 1073741824.0 : bytes / 1048576.0,
                bytes >= (uint64_t{1} << 30) ? "GiB" : "MiB");
  return std::string(buf) + " (" + std::to_string(bytes) + " bytes)";
}

}  // namespace dc::kernels

#endif  // DC_KERNELS_BASE_H_
