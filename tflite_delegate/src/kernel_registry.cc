#include "kernel_registry.h"

#include <cstring>

namespace dc::delegate {

// Defined in kernels/<op>.cc, one per file.
extern const KernelEntry kFullyConnectedKernel;
extern const KernelEntry kConv2DKernel;
extern const KernelEntry kDepthwiseConv2DKernel;
extern const KernelEntry kGatherKernel;

namespace {
const KernelEntry* const kKernels[] = {
    &kFullyConnectedKernel,
    &kConv2DKernel,
    &kDepthwiseConv2DKernel,
    &kGatherKernel,
};
}  // namespace

const KernelEntry* FindKernel(const char* custom_name) {
  if (custom_name == nullptr) return nullptr;
  for (const KernelEntry* entry : kKernels)
    if (std::strcmp(entry->custom_name, custom_name) == 0) return entry;
  return nullptr;
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
