// Public C interface of libdc_delegate.so: the two external-delegate entry points that
// ai_edge_litert.interpreter.load_delegate and TFLite's benchmark_model (--external_delegate_path) call,
// plus introspection helpers.
//
// Options (key/value strings):
//   num_threads  threads for one kernel, >= 1 (default 1)
//   mode         "sparse" (default: decode to the P+Q in-memory form) or "dense" (decode to float32)
//   abi_check    "1": at Prepare, cross-check every tensor and node the runtime shows us against the
//                layouts in tflite_abi.h and fail with a message if anything is inconsistent
#ifndef DC_DELEGATE_DC_DELEGATE_H_
#define DC_DELEGATE_DC_DELEGATE_H_

#include <stddef.h>
#include <stdint.h>

#include "dc_delegate/tflite_abi.h"

#define DC_DELEGATE_EXPORT __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

// Returns null (after calling report_error with the reason, if given) on invalid options.
DC_DELEGATE_EXPORT TfLiteDelegate* tflite_plugin_create_delegate(const char* const* option_keys,
                                                                 const char* const* option_values,
                                                                 size_t num_options,
                                                                 void (*report_error)(const char*));
DC_DELEGATE_EXPORT void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate);

// Bytes of decoded weights held by all kernels of `delegate` (0 before the first Prepare).
DC_DELEGATE_EXPORT uint64_t dc_delegate_resident_weight_bytes(const TfLiteDelegate* delegate);
// Number of TFLite nodes the delegate has claimed so far.
DC_DELEGATE_EXPORT int dc_delegate_claimed_nodes(const TfLiteDelegate* delegate);
// The in-memory weight form of every prepared kernel that has one, as lines "<custom op>:<form>\n" in
// preparation order (form: "block", "chunked", "pair", "walk", "dense"). Copies them NUL terminated into out
// when out_len exceeds their length; returns that length (-1 without a delegate).
DC_DELEGATE_EXPORT int64_t dc_delegate_weight_forms(const TfLiteDelegate* delegate, char* out, size_t out_len);
// The SIMD path the kernels of this library take in this process: "neon" (arm builds, chosen at compile
// time), "avx2+fma+bmi2" (x86-64 AVX2 clones chosen at run time), "avx2+fma" (conv clones only) or "portable".
// A static string; no delegate needed.
DC_DELEGATE_EXPORT const char* dc_delegate_simd_path(void);
// The path of the block-sparse FC loops (kernels/block_fully_connected.h) in this process: "avx512" (x86-64
// AVX-512 F/BW/DQ/VL unless DC_KERAS_DISABLE_AVX512 or DC_KERAS_DISABLE_AVX2 is set), "avx2", "neon" or
// "portable". A static string; no delegate needed.
DC_DELEGATE_EXPORT const char* dc_delegate_block_simd_path(void);

// Writes into out (NUL terminated) the Python struct format ("<4sBBBBii") of the custom options record the
// delegate reads for `custom_name`, derived from the layout its kernel reads; returns its length, 0 for an
// op it does not run, -1 when out_len is too small. tests/test_options_layout.py checks it against the exporter.
DC_DELEGATE_EXPORT int dc_delegate_options_format(const char* custom_name, char* out, int out_len);
// The same record as "<magic> <version> <field>,<field>,..." ("DCFC 1 magic,version,fused_activation,...");
// same return values.
DC_DELEGATE_EXPORT int dc_delegate_options_fields(const char* custom_name, char* out, int out_len);
// The custom ops the delegate runs, comma-separated and sorted ("DcConv2D,DcDepthwiseConv2D,..."); returns
// the length, -1 when out_len is too small.
DC_DELEGATE_EXPORT int dc_delegate_custom_ops(char* out, int out_len);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // DC_DELEGATE_DC_DELEGATE_H_
