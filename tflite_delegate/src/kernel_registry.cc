#include "kernel_registry.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "dc_delegate/dc_delegate.h"

namespace dc::delegate {
namespace {

// Constant-initialised (zero) before any registrar runs.
const KernelRegistrar* registry_head = nullptr;

// Writes `text` NUL-terminated into `out`; its length, or -1 when out_len is too small.
int CopyOut(const std::string& text, char* out, int out_len) {
  if (out == nullptr || out_len <= 0 || text.size() + 1 > static_cast<size_t>(out_len)) return -1;
  text.copy(out, text.size());
  out[text.size()] = '\0';
  return static_cast<int>(text.size());
}

// CopyOut of (layout.*describe)() for op `custom_name`'s options layout, "" for an op not registered; catches
// every exception (the callers are C entry points).
int DescribeOptions(const char* custom_name, std::string (options::Layout::*describe)() const, char* out,
                           int out_len) noexcept {
  try {
    const KernelEntry* entry = FindKernel(custom_name);
    return CopyOut(entry && entry->options ? (entry->options->*describe)() : "", out, out_len);
  } catch (...) {
    return -1;
  }
}

}  // namespace

KernelRegistrar::KernelRegistrar(const KernelEntry& entry) noexcept : entry_(entry), next_(registry_head) {
  registry_head = this;
}

const KernelEntry* FindKernel(const char* custom_name) {
  if (custom_name == nullptr) return nullptr;
  for (const KernelRegistrar* r = registry_head; r != nullptr; r = r->next_)
    if (std::strcmp(r->entry_.custom_name, custom_name) == 0) return &r->entry_;
  return nullptr;
}

std::vector<const KernelEntry*> RegisteredKernels() {
  std::vector<const KernelEntry*> entries;
  for (const KernelRegistrar* r = registry_head; r != nullptr; r = r->next_) entries.push_back(&r->entry_);
  std::sort(entries.begin(), entries.end(), [](const KernelEntry* a, const KernelEntry* b) {
    return std::strcmp(a->custom_name, b->custom_name) < 0;
  });
  return entries;
}

std::vector<int> TensorDims(const TfLiteTensor& tensor) {
  if (tensor.dims == nullptr) return {};
  return std::vector<int>(tensor.dims->data, tensor.dims->data + tensor.dims->size);
}

bool IsConstant(const TfLiteTensor& tensor) {
  return tensor.allocation_type == kTfLiteMmapRo && tensor.data != nullptr;
}

int64_t NumElements(const std::vector<int>& dims) {
  int64_t n = 1;
  for (int d : dims) n *= d;
  return n;
}

}  // namespace dc::delegate

// No C++ exception crosses the C ABI: each entry point catches them all.
extern "C" {

DC_DELEGATE_EXPORT int dc_delegate_options_format(const char* custom_name, char* out, int out_len) {
  return dc::delegate::DescribeOptions(custom_name, &dc::delegate::options::Layout::StructFormat, out, out_len);
}

DC_DELEGATE_EXPORT int dc_delegate_options_fields(const char* custom_name, char* out, int out_len) {
  return dc::delegate::DescribeOptions(custom_name, &dc::delegate::options::Layout::Description, out, out_len);
}

DC_DELEGATE_EXPORT int dc_delegate_custom_ops(char* out, int out_len) {
  try {
    std::string names;
    for (const dc::delegate::KernelEntry* entry : dc::delegate::RegisteredKernels())
      names += (names.empty() ? "" : ",") + std::string(entry->custom_name);
    return dc::delegate::CopyOut(names, out, out_len);
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
