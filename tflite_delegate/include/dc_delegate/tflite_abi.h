// The subset of TFLite's C ABI (TfLiteContext, TfLiteNode, TfLiteTensor, TfLiteDelegate, ...) that the dc
// delegate touches, declared here because no package installable on our machines ships TFLite's C headers.
//
// Layouts follow TFLite's common.h field by field (64-bit Linux/Android, LiteRT 2.3.0); see
// /work/shared/notes/tflite_delegate_abi.md for the facts and tests/test_delegate_abi.py for the check
// against a real interpreter. Only prefixes of TfLiteContext are declared: the runtime owns the struct and
// we never allocate or copy it, so the fields after the last one we use may be left out.
//
// Rules for editing: keep field order and C types exactly as TFLite's; never add fields; run
// tests/test_delegate_abi.py after any change.
#ifndef DC_DELEGATE_TFLITE_ABI_H_
#define DC_DELEGATE_TFLITE_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;

// Values of TfLiteType that the delegate looks at (the enum is an int in the structs).
enum {
  kTfLiteNoType = 0,
  kTfLiteFloat32 = 1,
  kTfLiteInt32 = 2,
  kTfLiteUInt8 = 3,
  kTfLiteInt64 = 4,
  kTfLiteInt8 = 9,
  kTfLiteFloat16 = 10,
};

// TfLiteAllocationType values.
enum { kTfLiteMemNone = 0, kTfLiteMmapRo = 1, kTfLiteArenaRw = 2 };

// TfLiteDelegateFlags.
enum {
  kTfLiteDelegateFlagsNone = 0,
  kTfLiteDelegateFlagsAllowDynamicTensors = 1,
  kTfLiteDelegateFlagsRequirePropagatedShapes = 2,
};

// Builtin code of an operator that is a custom op (BuiltinOperator_CUSTOM).
enum { kTfLiteBuiltinCustom = 32 };

typedef struct TfLiteIntArray {
  int size;
  int data[];  // flexible array member: allocated as sizeof(int) * (1 + size), released with free()
} TfLiteIntArray;

typedef struct TfLiteQuantizationParams {
  float scale;
  int32_t zero_point;
} TfLiteQuantizationParams;

typedef struct TfLiteQuantization {
  int type;  // TfLiteQuantizationType
  void* params;
} TfLiteQuantization;

struct TfLiteDelegate;
struct TfLiteContext;
struct TfLiteNode;
struct TfLiteRegistration;

typedef struct TfLiteTensor {
  int type;    // TfLiteType
  void* data;  // TfLitePtrUnion: every member is a pointer, so one void* has its size and alignment
  TfLiteIntArray* dims;
  TfLiteQuantizationParams params;
  int allocation_type;  // TfLiteAllocationType
  size_t bytes;
  const void* allocation;
  const char* name;
  struct TfLiteDelegate* delegate;
  int buffer_handle;  // TfLiteBufferHandle
  bool data_is_stale;
  bool is_variable;
  TfLiteQuantization quantization;
  void* sparsity;  // TfLiteSparsity*
  const TfLiteIntArray* dims_signature;
} TfLiteTensor;

typedef struct TfLiteNode {
  TfLiteIntArray* inputs;
  TfLiteIntArray* outputs;
  TfLiteIntArray* intermediates;
  TfLiteIntArray* temporaries;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
  struct TfLiteDelegate* delegate;
  bool might_have_side_effect;
} TfLiteNode;

typedef struct TfLiteRegistration {
  void* (*init)(struct TfLiteContext* context, const char* buffer, size_t length);
  void (*free)(struct TfLiteContext* context, void* buffer);
  TfLiteStatus (*prepare)(struct TfLiteContext* context, TfLiteNode* node);
  TfLiteStatus (*invoke)(struct TfLiteContext* context, TfLiteNode* node);
  const char* (*profiling_string)(const struct TfLiteContext* context, const TfLiteNode* node);
  int32_t builtin_code;
  const char* custom_name;
  int version;
  void* registration_external;  // TfLiteOperator*
  void* (*async_kernel)(struct TfLiteContext* context, TfLiteNode* node);
  uint64_t inplace_operator;
} TfLiteRegistration;

// Prefix of TfLiteContext up to recommended_num_threads: the fields the delegate uses.
typedef struct TfLiteContext {
  size_t tensors_size;
  TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext* context, TfLiteIntArray** execution_plan);
  TfLiteTensor* tensors;
  void* impl_;
  // Takes ownership of new_size (malloc'ed TfLiteIntArray).
  TfLiteStatus (*ResizeTensor)(struct TfLiteContext*, TfLiteTensor* tensor, TfLiteIntArray* new_size);
  void (*ReportError)(struct TfLiteContext*, const char* format, ...);
  TfLiteStatus (*AddTensors)(struct TfLiteContext*, int tensors_to_add, int* first_new_tensor_index);
  TfLiteStatus (*GetNodeAndRegistration)(struct TfLiteContext*, int node_index, TfLiteNode** node,
                                         TfLiteRegistration** registration);
  TfLiteStatus (*ReplaceNodeSubsetsWithDelegateKernels)(struct TfLiteContext*,
                                                        TfLiteRegistration registration,
                                                        const TfLiteIntArray* nodes_to_replace,
                                                        struct TfLiteDelegate* delegate);
  int recommended_num_threads;
} TfLiteContext;

typedef struct TfLiteDelegate {
  void* data_;
  TfLiteStatus (*Prepare)(TfLiteContext* context, struct TfLiteDelegate* delegate);
  TfLiteStatus (*CopyFromBufferHandle)(TfLiteContext* context, struct TfLiteDelegate* delegate,
                                       int buffer_handle, TfLiteTensor* tensor);
  TfLiteStatus (*CopyToBufferHandle)(TfLiteContext* context, struct TfLiteDelegate* delegate,
                                     int buffer_handle, TfLiteTensor* tensor);
  void (*FreeBufferHandle)(TfLiteContext* context, struct TfLiteDelegate* delegate, int* handle);
  int64_t flags;
  void* opaque_delegate_builder;  // must stay null: we use Prepare
} TfLiteDelegate;

// What the runtime passes as `buffer` to a delegate kernel's init.
typedef struct TfLiteDelegateParams {
  TfLiteDelegate* delegate;
  TfLiteIntArray* nodes_to_replace;
  TfLiteIntArray* input_tensors;
  TfLiteIntArray* output_tensors;
} TfLiteDelegateParams;

// External-delegate entry points (TFLite's external_delegate / load_delegate contract).
typedef void (*TfLiteErrorReporterFn)(const char* message);

#ifdef __cplusplus
}  // extern "C"
#endif

// Layout pins for 64-bit targets: a wrong field type or a reordering shows up here at compile time. The
// numbers are what TFLite's own headers give on LP64 (see tests/test_delegate_abi.py for the runtime check).
#if defined(__LP64__) || defined(_LP64)
#ifdef __cplusplus
#include <cstddef>
#define DC_ABI_ASSERT(cond) static_assert(cond, #cond)
#else
#define DC_ABI_ASSERT(cond) _Static_assert(cond, #cond)
#endif
DC_ABI_ASSERT(sizeof(TfLiteQuantizationParams) == 8);
DC_ABI_ASSERT(offsetof(TfLiteTensor, dims) == 16);
DC_ABI_ASSERT(offsetof(TfLiteTensor, params) == 24);
DC_ABI_ASSERT(offsetof(TfLiteTensor, bytes) == 40);
DC_ABI_ASSERT(offsetof(TfLiteTensor, name) == 56);
DC_ABI_ASSERT(offsetof(TfLiteTensor, quantization) == 80);
DC_ABI_ASSERT(sizeof(TfLiteTensor) == 112);
DC_ABI_ASSERT(offsetof(TfLiteNode, custom_initial_data) == 48);
DC_ABI_ASSERT(offsetof(TfLiteNode, custom_initial_data_size) == 56);
DC_ABI_ASSERT(sizeof(TfLiteNode) == 80);
DC_ABI_ASSERT(offsetof(TfLiteRegistration, builtin_code) == 40);
DC_ABI_ASSERT(offsetof(TfLiteRegistration, custom_name) == 48);
DC_ABI_ASSERT(sizeof(TfLiteRegistration) == 88);
DC_ABI_ASSERT(offsetof(TfLiteContext, ReplaceNodeSubsetsWithDelegateKernels) == 64);
DC_ABI_ASSERT(offsetof(TfLiteContext, recommended_num_threads) == 72);
DC_ABI_ASSERT(offsetof(TfLiteDelegate, flags) == 40);
DC_ABI_ASSERT(sizeof(TfLiteDelegate) == 56);
#undef DC_ABI_ASSERT
#endif

#endif  // DC_DELEGATE_TFLITE_ABI_H_
