#include "tflite_kernels/options_layout.h"

namespace dc::delegate::options {

std::string Layout::StructFormat() const {
  std::string out = "<4sB";
  for (size_t i = 0; i < count_; ++i) out += fields_[i].type;
  return out;
}

std::string Layout::Description() const {
  std::string out = std::string(magic_, 4) + " " + std::to_string(version_) + " magic,version";
  for (size_t i = 0; i < count_; ++i) out += std::string(",") + fields_[i].name;
  return out;
}

}  // namespace dc::delegate::options
