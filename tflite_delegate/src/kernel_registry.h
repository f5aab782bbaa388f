// The delegate's kernel registry: one entry per custom op it runs. Each glue file
// (tflite_kernels/<op>.cc) registers its own entry with a KernelRegistrar, so adding an op is that one file.
//
// Kernel contract: input 0 of the op is its only runtime input; every other input is a constant tensor of
// the model (the compressed blob, a bias), read once in Init. One kernel object runs one TFLite node.
#ifndef DC_DELEGATE_KERNEL_REGISTRY_H_
#define DC_DELEGATE_KERNEL_REGISTRY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "dc_codec.h"
#include "dc_delegate/tflite_abi.h"
#include "status.h"
#include "tflite_kernels/options_layout.h"

namespace dc::delegate {

class ThreadPool;

// Delegate options that kernels honour.
struct KernelConfig {
  bool dense = false;  // mode=dense: expand weights to float32 at Prepare instead of the P+Q sparse form
  // Option max_decoded_bytes: most bytes one op's weights may decode to (codec::DenseDecodeBytes in dense
  // mode, codec::SparseDecodeBytes otherwise; a gathered row counts as decoded floats too).
  uint64_t max_decoded_bytes = codec::kDefaultMaxDecodedBytes;
};

// What a kernel sees of the TFLite node it runs: copies, valid after the node is gone.
struct OpNode {
  std::vector<uint8_t> options;  // the op's custom options bytes
  std::vector<int> inputs;       // tensor indices; -1 for an absent optional input
  std::vector<int> outputs;
};

class OpKernel {
 public:
  virtual ~OpKernel() = default;
  // Once, at the first Prepare: parse options, read and decode the constant inputs. Any malformed input
  // (corrupt blob, inconsistent shapes) is an error Status, never a crash.
  virtual Status Init(const TfLiteContext& context, const OpNode& node, const KernelConfig& config) = 0;
  // Shape and TfLiteType of output 0 for the given shape of input 0.
  virtual Status OutputShape(const std::vector<int>& input_dims, std::vector<int>* output_dims) const = 0;
  virtual int OutputType() const = 0;
  // Floats of scratch memory Run needs for this input shape.
  virtual size_t ScratchFloats(const std::vector<int>& input_dims) const = 0;
  // Computes output 0. Fails only on what depends on the input's values (a gather index out of range);
  // everything else was checked at Prepare.
  virtual Status Run(const void* input, const std::vector<int>& input_dims, void* output, float* scratch,
                     ThreadPool* pool) const = 0;
  // Bytes of decoded weights the kernel keeps in memory (the P+Q form, or floats in dense mode).
  virtual size_t ResidentBytes() const = 0;
  // Which in-memory form of its weights the kernel computes on (e.g. "block", "chunked", "dense"); empty
  // for kernels with a single form. Reported through dc_delegate_weight_forms.
  virtual const char* FormName() const { return ""; }
};

struct KernelEntry {
  const char* custom_name;  // the op's custom code in the .tflite
  // Structural check at delegate Prepare (arity, types, constant weights). Nodes it rejects are left to
  // TFLite, which then reports them as unresolved custom ops.
  bool (*supports)(const TfLiteContext& context, const TfLiteNode& node);
  std::unique_ptr<OpKernel> (*create)();
  const options::Layout* options;  // its custom options record
};

// The `create` of a kernel class: CreateKernel<GatherKernel>.
template <typename Kernel>
std::unique_ptr<OpKernel> CreateKernel() {
  return std::make_unique<Kernel>();
}

// Adds an entry to the registry while the library loads; each glue file defines one at namespace scope:
//   const KernelRegistrar kRegistrar({"DcGather", Supports, CreateKernel<GatherKernel>, &kLayout});
// The registry is a list threaded through the registrars: nothing is allocated, so nothing can fail during
// static initialisation, and its head is constant-initialised, so the order in which the glue files
// initialise does not matter. It is read only after loading, from TFLite's calls. The delegate is one shared
// library linked from every object file (cpp_sources.txt's [delegate]), so no registrar is dropped.
class KernelRegistrar {
 public:
  explicit KernelRegistrar(const KernelEntry& entry) noexcept;
  KernelRegistrar(const KernelRegistrar&) = delete;
  KernelRegistrar& operator=(const KernelRegistrar&) = delete;

 private:
  friend const KernelEntry* FindKernel(const char* custom_name);
  friend std::vector<const KernelEntry*> RegisteredKernels();

  const KernelEntry entry_;
  const KernelRegistrar* next_;
};

// The entry whose custom_name equals `custom_name`, or null.
const KernelEntry* FindKernel(const char* custom_name);
// Every registered entry, sorted by custom name.
std::vector<const KernelEntry*> RegisteredKernels();

// Helpers shared by kernels.
std::vector<int> TensorDims(const TfLiteTensor& tensor);
bool IsConstant(const TfLiteTensor& tensor);
int64_t NumElements(const std::vector<int>& dims);

}  // namespace dc::delegate

#endif  // DC_DELEGATE_KERNEL_REGISTRY_H_
