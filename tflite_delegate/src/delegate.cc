// The dc TFLite delegate: claims the Dc* custom ops of a model and runs them with the kernels of
// kernel_registry.h. Everything crosses the boundary as the plain C structs of tflite_abi.h, and every
// runtime service is reached through TfLiteContext's function pointers (the LiteRT wheel exports none).
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "dc_delegate/dc_delegate.h"
#include "kernel_registry.h"
#include "kernels/conv2d.h"
#include "kernels/base.h"  // BytesString, ShapeString
#include "kernels/fully_connected.h"
#include "thread_pool.h"

namespace dc::delegate {
namespace {

constexpr const char* kDelegateKernelName = "DcDelegate";

// Default of option max_scratch_bytes: the im2col panels of every real layer we know fit in a few MiB
// (VGG's 3x3x512 patches: 2.4 MiB), while a crafted 1024x1024 filter would ask for gigabytes.
constexpr uint64_t kDefaultMaxScratchBytes = uint64_t{64} << 20;

struct Options {
  int num_threads = 1;
  KernelConfig kernel;
  bool abi_check = false;
  uint64_t max_scratch_bytes = kDefaultMaxScratchBytes;
};

struct DelegateState {
  TfLiteDelegate delegate{};
  Options options;
  std::unique_ptr<ThreadPool> pool;
  std::atomic<uint64_t> resident_bytes{0};
  std::atomic<int> claimed_nodes{0};
  // "<custom op>:<weight form>" per initialized kernel with a form, one per line (dc_delegate_weight_forms).
  std::mutex forms_mutex;
  std::string weight_forms;
};

DelegateState* StateOf(const TfLiteDelegate* delegate) {
  return static_cast<DelegateState*>(delegate->data_);
}

// Reports `message` through the interpreter's error reporter. Always with a "%s" format: messages may
// contain user text (tensor names) that must not be read as format directives.
void Report(TfLiteContext* context, const std::string& message) {
  context->ReportError(context, "%s\n", message.c_str());
}

std::string TensorName(const TfLiteContext& context, int index) {
  if (index < 0 || static_cast<size_t>(index) >= context.tensors_size || context.tensors[index].name == nullptr)
    return "?";
  return context.tensors[index].name;
}

std::vector<int> ToVector(const TfLiteIntArray* array) {
  if (array == nullptr) return {};
  return std::vector<int>(array->data, array->data + array->size);
}

// A TfLiteIntArray the runtime may free with free(), as ResizeTensor takes ownership of it.
TfLiteIntArray* NewIntArray(const std::vector<int>& values) {
  auto* array = static_cast<TfLiteIntArray*>(std::malloc(sizeof(int) * (values.size() + 1)));
  if (array == nullptr) return nullptr;
  array->size = static_cast<int>(values.size());
  for (size_t i = 0; i < values.size(); ++i) array->data[i] = values[i];
  return array;
}

// ---- ABI self-check ----------------------------------------------------------------------------------

size_t TypeSize(int type) {
  switch (type) {
    case kTfLiteFloat32: case kTfLiteInt32: return 4;
    case kTfLiteUInt8: case kTfLiteInt8: return 1;
    case kTfLiteInt64: return 8;
    default: return 0;
  }
}

// Every field we read, read through our declarations, must agree with the others: a shifted field gives
// garbage dims, sizes that do not match, names that are not strings, or registrations that make no sense.
Status CheckAbi(TfLiteContext* context) {
  if (context->tensors_size == 0 || context->tensors == nullptr) return Status::Error("context has no tensors");
  if (context->recommended_num_threads < -1 || context->recommended_num_threads > 4096)
    return Status::Error("implausible recommended_num_threads " + std::to_string(context->recommended_num_threads));
  size_t checked = 0;
  for (size_t i = 0; i < context->tensors_size; ++i) {
    const TfLiteTensor& t = context->tensors[i];
    if (t.type < 0 || t.type > 20) return Status::Error("tensor " + std::to_string(i) + " has type " + std::to_string(t.type));
    if (t.allocation_type < 0 || t.allocation_type > 7)
      return Status::Error("tensor " + std::to_string(i) + " has allocation type " + std::to_string(t.allocation_type));
    if (t.name != nullptr && strnlen(t.name, 4096) == 4096)
      return Status::Error("tensor " + std::to_string(i) + " name is not a string");
    const size_t size = TypeSize(t.type);
    if (t.dims == nullptr || size == 0) continue;
    if (t.dims->size < 0 || t.dims->size > 16)
      return Status::Error("tensor " + std::to_string(i) + " has rank " + std::to_string(t.dims->size));
    int64_t n = 1;
    for (int d = 0; d < t.dims->size; ++d) n *= t.dims->data[d];
    if (t.allocation_type == kTfLiteMmapRo && t.bytes != static_cast<size_t>(n) * size)
      return Status::Error("tensor " + std::to_string(i) + " ('" + TensorName(*context, static_cast<int>(i)) +
                           "'): bytes " + std::to_string(t.bytes) + " != elements x type size " +
                           std::to_string(n * size));
    ++checked;
  }
  if (checked == 0) return Status::Error("no tensor with a checkable size");
  TfLiteIntArray* plan = nullptr;
  if (context->GetExecutionPlan(context, &plan) != kTfLiteOk || plan == nullptr)
    return Status::Error("GetExecutionPlan failed");
  for (int i = 0; i < plan->size; ++i) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    if (context->GetNodeAndRegistration(context, plan->data[i], &node, &reg) != kTfLiteOk)
      return Status::Error("GetNodeAndRegistration failed");
    if (reg->builtin_code < 0 || reg->builtin_code > 1000)
      return Status::Error("node " + std::to_string(i) + " has builtin code " + std::to_string(reg->builtin_code));
    if (reg->builtin_code == kTfLiteBuiltinCustom &&
        (reg->custom_name == nullptr || strnlen(reg->custom_name, 4096) == 4096))
      return Status::Error("custom node " + std::to_string(i) + " has no custom name");
    if (reg->builtin_code == kTfLiteBuiltinCustom && node->custom_initial_data_size < 0)
      return Status::Error("custom node " + std::to_string(i) + " has a negative options size");
    for (const TfLiteIntArray* arr : {node->inputs, node->outputs}) {
      if (arr == nullptr || arr->size < 0 || arr->size > 64) return Status::Error("node " + std::to_string(i) + " has bad tensor lists");
      for (int k = 0; k < arr->size; ++k)
        if (arr->data[k] < -1 || arr->data[k] >= static_cast<int>(context->tensors_size))
          return Status::Error("node " + std::to_string(i) + " refers to tensor " + std::to_string(arr->data[k]));
    }
  }
  return Status();
}

// ---- the delegate kernel: one per connected subset of claimed nodes -----------------------------------

struct OpInstance {
  const KernelEntry* entry = nullptr;
  std::unique_ptr<OpKernel> kernel;
  int node_index = -1;
  OpNode node;
  bool initialized = false;
  // Set by Prepare so that Invoke neither looks tensors up nor allocates: the input's dims, and the
  // subset-internal storage of the input / output (null when TFLite owns that tensor).
  std::vector<int> in_dims;
  const float* internal_in = nullptr;
  float* internal_out = nullptr;
};

// A tensor produced and consumed inside the subset: TFLite's arena does not allocate those (no remaining
// node uses them), so the subset keeps its own storage.
struct InternalTensor {
  std::vector<int> dims;
  std::vector<float> storage;  // float-aligned bytes for any output type
};

class SubsetKernel {
 public:
  SubsetKernel(DelegateState* state) : state_(state) {}

  Status Init(TfLiteContext* context, const TfLiteDelegateParams& params) {
    outputs_ = ToVector(params.output_tensors);
    for (int node_index : ToVector(params.nodes_to_replace)) {
      TfLiteNode* node = nullptr;
      TfLiteRegistration* reg = nullptr;
      if (context->GetNodeAndRegistration(context, node_index, &node, &reg) != kTfLiteOk)
        return Status::Error("cannot look up node " + std::to_string(node_index));
      OpInstance op;
      op.entry = FindKernel(reg->custom_name);
      if (op.entry == nullptr) return Status::Error("node " + std::to_string(node_index) + " is not a dc op");
      op.node_index = node_index;
      const auto* options = static_cast<const uint8_t*>(node->custom_initial_data);
      if (options != nullptr && node->custom_initial_data_size > 0)
        op.node.options.assign(options, options + node->custom_initial_data_size);
      op.node.inputs = ToVector(node->inputs);
      op.node.outputs = ToVector(node->outputs);
      op.kernel = op.entry->create();
      ops_.push_back(std::move(op));
    }
    return Status();
  }

  TfLiteStatus Prepare(TfLiteContext* context) {
    const std::unordered_set<int> external(outputs_.begin(), outputs_.end());
    size_t scratch = 0;
    for (OpInstance& op : ops_) {
      const std::string where = Where(*context, op);
      if (!op.initialized) {
        Status st = op.kernel->Init(*context, op.node, state_->options.kernel);
        if (!st.ok()) {
          Report(context, "dc delegate: " + where + ": " + st.message());
          return kTfLiteError;
        }
        op.initialized = true;
        state_->resident_bytes += op.kernel->ResidentBytes();
        const char* form = op.kernel->FormName();
        if (form[0] != '\0') {
          std::lock_guard<std::mutex> lock(state_->forms_mutex);
          state_->weight_forms += std::string(op.entry->custom_name) + ":" + form + "\n";
        }
      }
      std::vector<int> out_dims;
      Status st = op.kernel->OutputShape(InputDims(*context, op.node.inputs[0]), &out_dims);
      if (!st.ok()) {
        Report(context, "dc delegate: " + where + ": " + st.message());
        return kTfLiteError;
      }
      const size_t op_scratch = op.kernel->ScratchFloats(InputDims(*context, op.node.inputs[0]));
      if (op_scratch > state_->options.max_scratch_bytes / sizeof(float)) {
        Report(context, "dc delegate: " + where + ": needs " +
                            kernels::BytesString(uint64_t{op_scratch} * sizeof(float)) +
                            " of scratch memory for input " + kernels::ShapeString(InputDims(*context, op.node.inputs[0])) +
                            ", over the delegate's max_scratch_bytes " +
                            kernels::BytesString(state_->options.max_scratch_bytes) +
                            " (raise that option to allow it)");
        return kTfLiteError;
      }
      scratch = std::max(scratch, op_scratch);
      const int out = op.node.outputs[0];
      if (external.count(out)) {
        TfLiteTensor& tensor = context->tensors[out];
        if (tensor.type != op.kernel->OutputType()) {
          Report(context, "dc delegate: " + where + ": output tensor has an unexpected type");
          return kTfLiteError;
        }
        if (TensorDims(tensor) != out_dims) {
          TfLiteIntArray* dims = NewIntArray(out_dims);
          if (dims == nullptr || context->ResizeTensor(context, &tensor, dims) != kTfLiteOk) {
            Report(context, "dc delegate: " + where + ": cannot resize the output tensor");
            return kTfLiteError;
          }
        }
        internal_.erase(out);
      } else {
        InternalTensor& t = internal_[out];
        t.dims = out_dims;
        t.storage.resize(static_cast<size_t>(NumElements(out_dims)));  // float outputs
      }
    }
    scratch_.resize(scratch);
    for (OpInstance& op : ops_) {  // after the loop above: resizing internal storage moves it
      op.in_dims = InputDims(*context, op.node.inputs[0]);
      auto in = internal_.find(op.node.inputs[0]);
      op.internal_in = in != internal_.end() ? in->second.storage.data() : nullptr;
      auto out = internal_.find(op.node.outputs[0]);
      op.internal_out = out != internal_.end() ? out->second.storage.data() : nullptr;
    }
    return kTfLiteOk;
  }

  TfLiteStatus Invoke(TfLiteContext* context) {
    for (const OpInstance& op : ops_) {
      const void* input = op.internal_in ? op.internal_in : context->tensors[op.node.inputs[0]].data;
      void* output = op.internal_out ? op.internal_out : context->tensors[op.node.outputs[0]].data;
      if (input == nullptr || output == nullptr) {
        Report(context, std::string("dc delegate: ") + op.entry->custom_name + ": tensors are not allocated");
        return kTfLiteError;
      }
      Status st = op.kernel->Run(input, op.in_dims, output, scratch_.data(), state_->pool.get());
      if (!st.ok()) {
        Report(context, "dc delegate: " + Where(*context, op) + ": " + st.message());
        return kTfLiteError;
      }
    }
    return kTfLiteOk;
  }

 private:
  // Names the op in messages by its weights tensor (the exporter calls it "<keras layer>/dc_blob").
  static std::string Where(const TfLiteContext& context, const OpInstance& op) {
    const int weights = op.node.inputs.size() > 1 ? op.node.inputs[1] : op.node.outputs[0];
    return std::string(op.entry->custom_name) + " (node " + std::to_string(op.node_index) + ", weights '" +
           TensorName(context, weights) + "')";
  }

  std::vector<int> InputDims(const TfLiteContext& context, int index) const {
    auto it = internal_.find(index);
    return it != internal_.end() ? it->second.dims : TensorDims(context.tensors[index]);
  }

  DelegateState* state_;
  std::vector<OpInstance> ops_;
  std::vector<int> outputs_;
  std::unordered_map<int, InternalTensor> internal_;
  std::vector<float> scratch_;
};

// Reports a C++ exception caught at an entry point. Builds no std::string for std::bad_alloc: memory is
// what just ran out.
void ReportException(TfLiteContext* context, const char* where, const std::exception* error) {
  if (context == nullptr) return;
  if (dynamic_cast<const std::bad_alloc*>(error) != nullptr)
    context->ReportError(context, "dc delegate: %s: out of memory (std::bad_alloc)\n", where);
  else if (error != nullptr)
    context->ReportError(context, "dc delegate: %s: internal error: %s\n", where, error->what());
  else
    context->ReportError(context, "dc delegate: %s: internal error (unknown C++ exception)\n", where);
}

// Runs `body` (an entry point called by the TFLite runtime through C function pointers) so that no C++
// exception crosses that C ABI: one becomes kTfLiteError with a message.
template <typename Body>
TfLiteStatus Guarded(TfLiteContext* context, const char* where, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::exception& error) {
    ReportException(context, where, &error);
  } catch (...) {
    ReportException(context, where, nullptr);
  }
  return kTfLiteError;
}

// Errors in init cannot be returned; they are kept and reported by prepare.
struct KernelHandle {
  std::unique_ptr<SubsetKernel> kernel;
  Status init_status;
};

// Init has no status to return: on an exception it returns null, which Prepare reports.
void* KernelInit(TfLiteContext* context, const char* buffer, size_t) noexcept {
  try {
    const auto* params = reinterpret_cast<const TfLiteDelegateParams*>(buffer);
    auto handle = std::make_unique<KernelHandle>();
    handle->kernel = std::make_unique<SubsetKernel>(StateOf(params->delegate));
    handle->init_status = handle->kernel->Init(context, *params);
    return handle.release();
  } catch (const std::exception& error) {
    ReportException(context, "kernel init", &error);
  } catch (...) {
    ReportException(context, "kernel init", nullptr);
  }
  return nullptr;
}

void KernelFree(TfLiteContext*, void* buffer) noexcept { delete static_cast<KernelHandle*>(buffer); }

TfLiteStatus KernelPrepare(TfLiteContext* context, TfLiteNode* node) noexcept {
  return Guarded(context, "prepare", [&] {
    auto* handle = static_cast<KernelHandle*>(node->user_data);
    if (handle == nullptr) {
      context->ReportError(context, "dc delegate: the delegate kernel failed to initialise\n");
      return kTfLiteError;
    }
    if (!handle->init_status.ok()) {
      Report(context, "dc delegate: " + handle->init_status.message());
      return kTfLiteError;
    }
    return handle->kernel->Prepare(context);
  });
}

TfLiteStatus KernelInvoke(TfLiteContext* context, TfLiteNode* node) noexcept {
  return Guarded(context, "invoke", [&] {
    auto* handle = static_cast<KernelHandle*>(node->user_data);
    if (handle == nullptr || !handle->init_status.ok()) {
      context->ReportError(context, "dc delegate: invoke of a delegate kernel that failed to prepare\n");
      return kTfLiteError;
    }
    return handle->kernel->Invoke(context);
  });
}

TfLiteStatus ClaimNodes(TfLiteContext* context, TfLiteDelegate* delegate) {
  DelegateState* state = StateOf(delegate);
  if (state->options.abi_check) {
    Status st = CheckAbi(context);
    if (!st.ok()) {
      Report(context, "dc delegate: ABI check failed: " + st.message());
      return kTfLiteError;
    }
  }
  TfLiteIntArray* plan = nullptr;
  if (context->GetExecutionPlan(context, &plan) != kTfLiteOk) return kTfLiteError;
  std::vector<int> claimed;
  for (int i = 0; i < plan->size; ++i) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    if (context->GetNodeAndRegistration(context, plan->data[i], &node, &reg) != kTfLiteOk) return kTfLiteError;
    if (reg->builtin_code != kTfLiteBuiltinCustom) continue;
    const KernelEntry* entry = FindKernel(reg->custom_name);
    if (entry != nullptr && entry->supports(*context, *node)) claimed.push_back(plan->data[i]);
  }
  if (claimed.empty()) return kTfLiteOk;
  TfLiteIntArray* nodes = NewIntArray(claimed);
  if (nodes == nullptr) {
    Report(context, "dc delegate: out of memory listing the nodes to claim");
    return kTfLiteError;
  }
  TfLiteRegistration reg{};
  reg.init = KernelInit;
  reg.free = KernelFree;
  reg.prepare = KernelPrepare;
  reg.invoke = KernelInvoke;
  reg.builtin_code = kTfLiteBuiltinCustom;
  reg.custom_name = kDelegateKernelName;
  reg.version = 1;
  const TfLiteStatus status = context->ReplaceNodeSubsetsWithDelegateKernels(context, reg, nodes, delegate);
  std::free(nodes);
  if (status == kTfLiteOk) state->claimed_nodes += static_cast<int>(claimed.size());
  return status;
}

TfLiteStatus DelegatePrepare(TfLiteContext* context, TfLiteDelegate* delegate) noexcept {
  return Guarded(context, "delegate prepare", [&] { return ClaimNodes(context, delegate); });
}

// A byte count option: a decimal integer in [1, 2^62].
Status ParseByteCount(const std::string& key, const std::string& value, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long bytes = std::strtoull(value.c_str(), &end, 10);
  if (value.empty() || value[0] == '-' || *end != '\0' || errno == ERANGE || bytes < 1 || bytes > (1ull << 62))
    return Status::Error(key + " must be a byte count in [1, 2^62], got '" + value + "'");
  *out = bytes;
  return Status();
}

Status ParseOptions(const char* const* keys, const char* const* values, size_t n, Options* options) {
  for (size_t i = 0; i < n; ++i) {
    const std::string key = keys[i] ? keys[i] : "", value = values[i] ? values[i] : "";
    if (key == "num_threads") {
      char* end = nullptr;
      const long threads = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || threads < 1 || threads > 256)
        return Status::Error("num_threads must be an integer in [1, 256], got '" + value + "'");
      options->num_threads = static_cast<int>(threads);
    } else if (key == "mode") {
      if (value != "sparse" && value != "dense")
        return Status::Error("mode must be 'sparse' or 'dense', got '" + value + "'");
      options->kernel.dense = value == "dense";
    } else if (key == "abi_check") {
      if (value != "0" && value != "1") return Status::Error("abi_check must be 0 or 1, got '" + value + "'");
      options->abi_check = value == "1";
    } else if (key == "max_scratch_bytes") {
      Status st = ParseByteCount(key, value, &options->max_scratch_bytes);
      if (!st.ok()) return st;
    } else if (key == "max_decoded_bytes") {
      Status st = ParseByteCount(key, value, &options->kernel.max_decoded_bytes);
      if (!st.ok()) return st;
    } else {
      return Status::Error("unknown option '" + key +
                           "' (known: num_threads, mode, abi_check, max_scratch_bytes, max_decoded_bytes)");
    }
  }
  return Status();
}

}  // namespace
}  // namespace dc::delegate

using dc::delegate::DelegateState;

extern "C" {

TfLiteDelegate* tflite_plugin_create_delegate(const char* const* option_keys, const char* const* option_values,
                                              size_t num_options, void (*report_error)(const char*)) {
  try {
    dc::delegate::Options options;
    dc::delegate::Status st = dc::delegate::ParseOptions(option_keys, option_values, num_options, &options);
    if (!st.ok()) {
      if (report_error) report_error(("dc delegate: " + st.message()).c_str());
      return nullptr;
    }
    auto state = std::make_unique<DelegateState>();
    state->options = options;
    state->pool = std::make_unique<dc::delegate::ThreadPool>(options.num_threads);
    state->delegate.data_ = state.get();
    state->delegate.Prepare = dc::delegate::DelegatePrepare;
    // Without AllowDynamicTensors the runtime prepares the original graph first and fails on our custom ops
    // before ever calling Prepare (see the ABI notes).
    state->delegate.flags = kTfLiteDelegateFlagsAllowDynamicTensors;
    return &state.release()->delegate;
  } catch (const std::bad_alloc&) {
    if (report_error) report_error("dc delegate: out of memory creating the delegate");
  } catch (const std::exception&) {
    if (report_error) report_error("dc delegate: cannot create the delegate (internal error)");
  } catch (...) {
    if (report_error) report_error("dc delegate: cannot create the delegate (unknown C++ exception)");
  }
  return nullptr;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) {
  if (delegate != nullptr) delete dc::delegate::StateOf(delegate);
}

uint64_t dc_delegate_resident_weight_bytes(const TfLiteDelegate* delegate) {
  return delegate ? dc::delegate::StateOf(delegate)->resident_bytes.load() : 0;
}

int dc_delegate_claimed_nodes(const TfLiteDelegate* delegate) {
  return delegate ? dc::delegate::StateOf(delegate)->claimed_nodes.load() : 0;
}

int64_t dc_delegate_weight_forms(const TfLiteDelegate* delegate, char* out, size_t out_len) {
  if (delegate == nullptr) return -1;
  try {
    DelegateState* state = dc::delegate::StateOf(delegate);
    std::lock_guard<std::mutex> lock(state->forms_mutex);
    const std::string& forms = state->weight_forms;
    if (out == nullptr || out_len <= forms.size()) return static_cast<int64_t>(forms.size());
    std::memcpy(out, forms.data(), forms.size());
    out[forms.size()] = '\0';
    return static_cast<int64_t>(forms.size());
  } catch (...) {  // std::mutex::lock may throw std::system_error; nothing crosses the C ABI
    return -1;
  }
}

const char* dc_delegate_simd_path(void) {
  // The conv loops' check (AVX2+FMA) is a subset of the FC loops' (AVX2+FMA+BMI1/2), so the FC answer refines it.
  const char* conv = dc::kernels::simd::PathName();
  if (std::strcmp(conv, "avx2") != 0) return conv;
  return dc::kernels::FullyConnectedUsesAvx2() ? "avx2+fma+bmi2" : "avx2+fma";
}

const char* dc_delegate_block_simd_path(void) { return dc::kernels::BlockFullyConnectedPathName(); }

}  // extern "C"
