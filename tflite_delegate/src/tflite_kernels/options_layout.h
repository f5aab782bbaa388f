// Byte layouts of the dc ops' custom options records (little endian, written by dc_keras/export/options.py and
// dc_keras/export/conv_rewriters.py). The kernels read their fields through these offsets only, and
// dc_delegate_options_format() turns the same tables into Python struct formats, which
// tests/test_options_layout.py compares with the exporter's: the two sides cannot drift apart silently.
#ifndef DC_DELEGATE_TFLITE_KERNELS_OPTIONS_LAYOUT_H_
#define DC_DELEGATE_TFLITE_KERNELS_OPTIONS_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace dc::delegate::options {

// Every record starts with a 4-byte magic and a uint8 version.
constexpr size_t kMagic = 0, kVersion = 4;

// DcFullyConnected ("DCFC").
namespace fc {
constexpr size_t kActivation = 5, kKeepNumDims = 6, kReserved = 7, kUnits = 8, kInputSize = 12, kSize = 16;
}  // namespace fc

// DcConv2D ("DCCV") and DcDepthwiseConv2D ("DCDW"): byte 7 is reserved (conv) or the blob layout
// (depthwise); kChannel is in_c (conv) or the depth multiplier (depthwise).
namespace conv {
constexpr size_t kActivation = 5, kPadding = 6, kByte7 = 7, kOutC = 8, kKernelH = 12, kKernelW = 16, kChannel = 20,
                 kStrideH = 24, kStrideW = 28, kDilationH = 32, kDilationW = 36, kSize = 40;
}  // namespace conv

// DcGather ("DCGA").
namespace gather {
constexpr size_t kReserved = 5, kReservedEnd = 8, kVocab = 8, kDim = 12, kSize = 16;
}  // namespace gather

// Python struct format ("<4sBBBBii") of the record of custom op `custom_name`, built from the offsets above;
// empty for an op without options.
std::string StructFormat(const std::string& custom_name);

}  // namespace dc::delegate::options

#endif  // DC_DELEGATE_TFLITE_KERNELS_OPTIONS_LAYOUT_H_
