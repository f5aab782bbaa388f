// C ABI of libdc_codec.so (see dc_codec_c_api.h): error codes and message buffers instead of Status,
// so that ctypes can call it without C++ types crossing the boundary.
#include "dc_codec_c_api.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "dc_codec.h"

namespace {

int Fail(int code, const std::string& message, char* err, size_t err_len) {
  if (err != nullptr && err_len > 0) {
    const size_t n = std::min(message.size(), err_len - 1);
    std::memcpy(err, message.data(), n);
    err[n] = '\0';
  }
  return code;
}

int FromStatus(const dc::codec::Status& st, char* err, size_t err_len) {
  return st.ok() ? DC_CODEC_OK : Fail(DC_CODEC_INVALID_BLOB, st.message(), err, err_len);
}

// Copies a literal message: usable where building a std::string could itself throw.
int FailLiteral(int code, const char* message, char* err, size_t err_len) {
  if (err != nullptr && err_len > 0) {
    const size_t n = std::min(std::strlen(message), err_len - 1);
    std::memcpy(err, message, n);
    err[n] = '\0';
  }
  return code;
}

// Runs `body` (returning an error code) so that no C++ exception leaves the C ABI: an allocation failure or
// any other exception becomes DC_CODEC_INTERNAL with a message.
template <typename Body>
int Guarded(char* err, size_t err_len, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return FailLiteral(DC_CODEC_INTERNAL, "dc_codec: out of memory", err, err_len);
  } catch (const std::exception& e) {
    return FailLiteral(DC_CODEC_INTERNAL, e.what(), err, err_len);
  } catch (...) {
    return FailLiteral(DC_CODEC_INTERNAL, "dc_codec: unknown C++ exception", err, err_len);
  }
}

}  // namespace

extern "C" {

int dc_codec_abi_version(void) { return 2; }

int dc_codec_parse_info(const uint8_t* data, size_t size, dc_codec_info* out, char* err, size_t err_len) {
  if (out == nullptr) return FailLiteral(DC_CODEC_BAD_ARGUMENT, "null info pointer", err, err_len);
  return Guarded(err, err_len, [&]() -> int {
    dc::codec::BlobInfo info;
    const dc::codec::Status st = dc::codec::ParseInfo(data, size, &info);
    if (!st.ok()) return FromStatus(st, err, err_len);
    std::memset(out, 0, sizeof(*out));
    out->ndim = static_cast<int32_t>(info.shape.size());
    std::copy(info.shape.begin(), info.shape.end(), out->shape);
    out->bits = info.bits;
    out->index_bits = info.index_bits;
    out->num_centroids = info.num_centroids;
    out->num_nonzeros = info.num_nonzeros;
    out->num_entries = info.num_entries;
    out->num_elements = info.num_elements;
    out->dense_layout = info.dense_layout;
    out->codebook_fp16 = info.codebook_fp16;
    out->delta_coder = static_cast<int32_t>(info.delta_coder);
    out->code_coder = static_cast<int32_t>(info.code_coder);
    out->header_bytes = info.header_bytes;
    out->codebook_bytes = info.codebook_bytes;
    out->delta_stream_bytes = info.delta_stream_bytes;
    out->code_stream_bytes = info.code_stream_bytes;
    out->total_bytes = info.total_bytes;
    out->format_version = info.format_version;
    out->block_axis = info.block_layout ? static_cast<int32_t>(info.block_axis) : 0;
    out->block_len = info.block_len;
    return DC_CODEC_OK;
  });
}

int dc_codec_decode_dense(const uint8_t* data, size_t size, float* out, size_t out_len, char* err, size_t err_len) {
  return Guarded(err, err_len, [&]() -> int {
    const dc::codec::Status st = dc::codec::DecodeDense(data, size, out, out_len);
    if (!st.ok() && st.message().rfind("output has ", 0) == 0) {
      return Fail(DC_CODEC_BAD_ARGUMENT, st.message(), err, err_len);
    }
    return FromStatus(st, err, err_len);
  });
}

int dc_codec_decode_streams(const uint8_t* data, size_t size, uint8_t* delta, size_t delta_len, uint8_t* code,
                            size_t code_len, char* err, size_t err_len) {
  return Guarded(err, err_len, [&]() -> int {
    const dc::codec::Status st = dc::codec::DecodeStreamsInto(data, size, delta, delta_len, code, code_len);
    if (!st.ok() && st.message().rfind("output has ", 0) == 0) {
      return Fail(DC_CODEC_BAD_ARGUMENT, st.message(), err, err_len);
    }
    return FromStatus(st, err, err_len);
  });
}

int dc_codec_sparse_decode(const uint8_t* data, size_t size, void** handle, int64_t* dims, uint64_t* num_entries,
                           uint32_t* num_centroids, char* err, size_t err_len) {
  if (handle == nullptr || dims == nullptr || num_entries == nullptr || num_centroids == nullptr) {
    return FailLiteral(DC_CODEC_BAD_ARGUMENT, "null output pointer", err, err_len);
  }
  *handle = nullptr;
  return Guarded(err, err_len, [&]() -> int {
    std::unique_ptr<dc::codec::SparseMatrix> owned(new dc::codec::SparseMatrix);
    const dc::codec::Status st = dc::codec::DecodeSparse(data, size, owned.get());
    if (!st.ok()) return FromStatus(st, err, err_len);
    dc::codec::SparseMatrix* m = owned.release();
    dims[0] = m->rows;
    dims[1] = m->cols;
    *num_entries = m->delta.size();
    *num_centroids = static_cast<uint32_t>(m->codebook.size());
    *handle = m;
    return DC_CODEC_OK;
  });
}

void dc_codec_sparse_copy(const void* handle, uint32_t* row_ptr, uint8_t* delta, uint8_t* code, float* codebook,
                          uint64_t* resident_bytes) {
  const auto* m = static_cast<const dc::codec::SparseMatrix*>(handle);
  if (m == nullptr) return;
  if (row_ptr && !m->row_ptr.empty()) std::memcpy(row_ptr, m->row_ptr.data(), m->row_ptr.size() * sizeof(uint32_t));
  if (delta && !m->delta.empty()) std::memcpy(delta, m->delta.data(), m->delta.size());
  if (code && !m->code.empty()) std::memcpy(code, m->code.data(), m->code.size());
  if (codebook && !m->codebook.empty()) std::memcpy(codebook, m->codebook.data(), m->codebook.size() * sizeof(float));
  if (resident_bytes) *resident_bytes = m->ResidentBytes();
}

void dc_codec_sparse_free(void* handle) { delete static_cast<dc::codec::SparseMatrix*>(handle); }

}  // extern "C"
