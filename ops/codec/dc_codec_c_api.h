// C ABI of libdc_codec.so, for ctypes (dc_keras/codec/native.py). Thin wrapper over dc_codec.h.
//
// Every function returns 0 on success or a nonzero error code, and on error writes a NUL-terminated
// message into err[0, err_len) (truncated if needed).
#ifndef DC_KERAS_OPS_CODEC_DC_CODEC_C_API_H_
#define DC_KERAS_OPS_CODEC_DC_CODEC_C_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DC_CODEC_EXPORT __attribute__((visibility("default")))

enum {
  DC_CODEC_OK = 0,
  DC_CODEC_INVALID_BLOB = 1,   // malformed / corrupt / unsupported blob
  DC_CODEC_BAD_ARGUMENT = 2,   // caller error (wrong output size, null pointer)
  DC_CODEC_INTERNAL = 3,       // allocation failure or other unexpected condition
};

// Mirror of dc::codec::BlobInfo with fixed-size fields. Coders: 0 raw, 1 huffman, 2 rans. Block axis: 0 none
// (single weights), 1 columns, 2 rows; num_nonzeros then counts stored blocks.
typedef struct {
  int32_t ndim;
  int64_t shape[8];
  int32_t bits;
  int32_t index_bits;
  uint32_t num_centroids;
  uint64_t num_nonzeros;
  uint64_t num_entries;
  uint64_t num_elements;
  int32_t dense_layout;
  int32_t codebook_fp16;
  int32_t delta_coder;
  int32_t code_coder;
  uint64_t header_bytes;
  uint64_t codebook_bytes;
  uint64_t delta_stream_bytes;
  uint64_t code_stream_bytes;
  uint64_t total_bytes;
  int32_t format_version;
  int32_t block_axis;
  int32_t block_len;
} dc_codec_info;

// Version of this C ABI (bumped on incompatible changes).
DC_CODEC_EXPORT int dc_codec_abi_version(void);

DC_CODEC_EXPORT int dc_codec_parse_info(const uint8_t* data, size_t size, dc_codec_info* info, char* err,
                                        size_t err_len);

DC_CODEC_EXPORT int dc_codec_decode_dense(const uint8_t* data, size_t size, float* out, size_t out_len,
                                          char* err, size_t err_len);

// Decodes both symbol streams as stored; delta_len / code_len must equal num_entries (0 in dense
// layout) and the code count (num_nonzeros; num_nonzeros * block_len in a block layout; num_elements in
// dense layout).
DC_CODEC_EXPORT int dc_codec_decode_streams(const uint8_t* data, size_t size, uint8_t* delta, size_t delta_len,
                                            uint8_t* code, size_t code_len, char* err, size_t err_len);

// Sparse decoding in two steps so the caller can allocate the arrays: decode into an opaque handle and
// learn the sizes, copy out, free. dims gets (rows, cols).
DC_CODEC_EXPORT int dc_codec_sparse_decode(const uint8_t* data, size_t size, void** handle, int64_t* dims,
                                           uint64_t* num_entries, uint32_t* num_centroids, char* err,
                                           size_t err_len);
// row_ptr: rows + 1 uint32; delta, code: num_entries uint8; codebook: num_centroids float32.
DC_CODEC_EXPORT void dc_codec_sparse_copy(const void* handle, uint32_t* row_ptr, uint8_t* delta, uint8_t* code,
                                          float* codebook, uint64_t* resident_bytes);
DC_CODEC_EXPORT void dc_codec_sparse_free(void* handle);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // DC_KERAS_OPS_CODEC_DC_CODEC_C_API_H_
