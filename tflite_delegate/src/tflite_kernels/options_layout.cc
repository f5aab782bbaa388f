// Python struct formats of the options records, derived from options_layout.h's offsets.
#include "tflite_kernels/options_layout.h"

#include <initializer_list>
#include <utility>

#include "dc_delegate/dc_delegate.h"

namespace dc::delegate::options {
namespace {

// A field: its offset and its struct code ('4s' magic, 'B' uint8, 'i' int32).
using Field = std::pair<size_t, const char*>;

// The format of fields laid out in order; a gap or overlap between the offsets (a layout the exporter's
// packed struct could not match) shows up as "?" so that the comparison fails.
std::string Format(std::initializer_list<Field> fields, size_t size) {
  std::string out = "<";
  size_t at = 0;
  for (const Field& f : fields) {
    if (f.first != at) out += "?";
    out += f.second;
    at = f.first + (f.second[0] == '4' ? 4 : f.second[0] == 'i' ? 4 : 1);
  }
  if (at != size) out += "?";
  return out;
}

}  // namespace

std::string StructFormat(const std::string& custom_name) {
  if (custom_name == "DcFullyConnected")
    return Format({{kMagic, "4s"}, {kVersion, "B"}, {fc::kActivation, "B"}, {fc::kKeepNumDims, "B"},
                   {fc::kReserved, "B"}, {fc::kUnits, "i"}, {fc::kInputSize, "i"}},
                  fc::kSize);
  if (custom_name == "DcConv2D" || custom_name == "DcDepthwiseConv2D")
    return Format({{kMagic, "4s"}, {kVersion, "B"}, {conv::kActivation, "B"}, {conv::kPadding, "B"},
                   {conv::kByte7, "B"}, {conv::kOutC, "i"}, {conv::kKernelH, "i"}, {conv::kKernelW, "i"},
                   {conv::kChannel, "i"}, {conv::kStrideH, "i"}, {conv::kStrideW, "i"}, {conv::kDilationH, "i"},
                   {conv::kDilationW, "i"}},
                  conv::kSize);
  if (custom_name == "DcGather")
    return Format({{kMagic, "4s"}, {kVersion, "B"}, {gather::kReserved, "B"}, {gather::kReserved + 1, "B"},
                   {gather::kReserved + 2, "B"}, {gather::kVocab, "i"}, {gather::kDim, "i"}},
                  gather::kSize);
  return "";
}

}  // namespace dc::delegate::options

extern "C" DC_DELEGATE_EXPORT int dc_delegate_options_format(const char* custom_name, char* out, int out_len) {
  try {
    if (custom_name == nullptr || out == nullptr || out_len <= 0) return -1;
    const std::string format = dc::delegate::options::StructFormat(custom_name);
    if (format.size() + 1 > static_cast<size_t>(out_len)) return -1;
    format.copy(out, format.size());
    out[format.size()] = '\0';
    return static_cast<int>(format.size());
  } catch (...) {  // no C++ exception crosses the C ABI
    return -1;
  }
}
