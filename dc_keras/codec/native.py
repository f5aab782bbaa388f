"""ctypes bindings to the C++ decoder core (libdc_codec.so, compiled on first use).

These run the same code as the TFLite delegate and the TF op, so tests and benchmarks that go through
here exercise the production decoder; `dc_keras.codec.decode` is the independent numpy reference.
"""
from __future__ import annotations

import ctypes
import dataclasses
import threading
from pathlib import Path

import numpy as np

from dc_keras._native import SOURCE_ROOT, build_shared_library, cpp_library
from dc_keras.codec.format import BLOCK_AXIS_NAMES, CODER_NAMES, BlobInfo, CodecError

CODEC_DIR = SOURCE_ROOT / "ops" / "codec"
SOURCES, INCLUDE_DIRS = cpp_library("codec_c_api")
_ERR_LEN = 1024
_lock = threading.Lock()
_lib = None


class _Info(ctypes.Structure):
    _fields_ = [("ndim", ctypes.c_int32), ("shape", ctypes.c_int64 * 8), ("bits", ctypes.c_int32),
                ("index_bits", ctypes.c_int32), ("num_centroids", ctypes.c_uint32),
                ("num_nonzeros", ctypes.c_uint64), ("num_entries", ctypes.c_uint64),
                ("num_elements", ctypes.c_uint64), ("dense_layout", ctypes.c_int32),
                ("codebook_fp16", ctypes.c_int32), ("delta_coder", ctypes.c_int32), ("code_coder", ctypes.c_int32),
                ("header_bytes", ctypes.c_uint64), ("codebook_bytes", ctypes.c_uint64),
                ("delta_stream_bytes", ctypes.c_uint64), ("code_stream_bytes", ctypes.c_uint64),
                ("total_bytes", ctypes.c_uint64), ("format_version", ctypes.c_int32),
                ("block_axis", ctypes.c_int32), ("block_len", ctypes.c_int32)]


@dataclasses.dataclass
class SparseMatrix:
    """numpy copy of dc::codec::SparseMatrix (see ops/codec/dc_codec.h for the entry convention)."""

    rows: int
    cols: int
    row_ptr: np.ndarray   # uint32, rows + 1
    delta: np.ndarray     # uint8: 1..255 column step of a nonzero, 0 a filler (+255)
    code: np.ndarray      # uint8 codebook index per entry
    codebook: np.ndarray  # float32
    resident_bytes: int   # what the C++ object held

    def to_dense(self) -> np.ndarray:
        """The (rows, cols) float32 matrix these entries describe."""
        out = np.zeros((self.rows, self.cols), dtype=np.float32)
        real = self.delta != 0
        steps = np.where(real, self.delta.astype(np.int64), 255)
        entry_row = np.repeat(np.arange(self.rows), np.diff(self.row_ptr.astype(np.int64)))
        row_begin = np.cumsum(steps) - 1
        # Column = cumulative step within the row: subtract the running total at the row's start.
        starts = np.concatenate([[0], np.cumsum(steps)])[self.row_ptr[:-1].astype(np.int64)]
        cols = row_begin - starts[entry_row]
        out[entry_row[real], cols[real]] = self.codebook[self.code[real]]
        return out


def library_path() -> Path:
    """Path of libdc_codec.so, compiling it on first use."""
    return build_shared_library("dc_codec", SOURCES, include_dirs=INCLUDE_DIRS)


def _load():
    global _lib
    with _lock:
        if _lib is None:
            lib = ctypes.CDLL(str(library_path()))
            u8p, f32p = ctypes.POINTER(ctypes.c_uint8), ctypes.POINTER(ctypes.c_float)
            lib.dc_codec_parse_info.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(_Info),
                                                ctypes.c_char_p, ctypes.c_size_t]
            lib.dc_codec_decode_dense.argtypes = [ctypes.c_char_p, ctypes.c_size_t, f32p, ctypes.c_size_t,
                                                  ctypes.c_char_p, ctypes.c_size_t]
            lib.dc_codec_decode_streams.argtypes = [ctypes.c_char_p, ctypes.c_size_t, u8p, ctypes.c_size_t, u8p,
                                                    ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
            lib.dc_codec_sparse_decode.argtypes = [
                ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int64),
                ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint32), ctypes.c_char_p, ctypes.c_size_t]
            lib.dc_codec_sparse_copy.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), u8p, u8p, f32p,
                                                 ctypes.POINTER(ctypes.c_uint64)]
            lib.dc_codec_sparse_copy.restype = None
            lib.dc_codec_sparse_free.argtypes = [ctypes.c_void_p]
            lib.dc_codec_sparse_free.restype = None
            _lib = lib
    return _lib


def _check(code: int, err: ctypes.Array) -> None:
    if code != 0:
        message = err.value.decode("utf-8", "replace")
        if code == 1:
            raise CodecError(message)
        raise ValueError(message)


def _ptr(array: np.ndarray, ctype):
    return array.ctypes.data_as(ctypes.POINTER(ctype))


def parse_info(blob: bytes) -> BlobInfo:
    """Header fields via the C++ parser (validates magic, version, sizes, CRC32 and tables)."""
    lib, blob = _load(), bytes(blob)
    info, err = _Info(), ctypes.create_string_buffer(_ERR_LEN)
    _check(lib.dc_codec_parse_info(blob, len(blob), ctypes.byref(info), err, _ERR_LEN), err)
    return BlobInfo(
        shape=tuple(info.shape[:info.ndim]), bits=info.bits, index_bits=info.index_bits,
        num_centroids=info.num_centroids, num_nonzeros=info.num_nonzeros, num_entries=info.num_entries,
        dense_layout=bool(info.dense_layout), codebook_fp16=bool(info.codebook_fp16),
        delta_coder=CODER_NAMES[info.delta_coder], code_coder=CODER_NAMES[info.code_coder],
        num_elements=info.num_elements, header_bytes=info.header_bytes, codebook_bytes=info.codebook_bytes,
        delta_stream_bytes=info.delta_stream_bytes, code_stream_bytes=info.code_stream_bytes,
        total_bytes=info.total_bytes, format_version=info.format_version,
        block_axis=BLOCK_AXIS_NAMES.get(info.block_axis), block_len=info.block_len)


def decode(blob: bytes) -> np.ndarray:
    """Decodes a blob with the C++ core into a float32 array of its shape.

    Raises:
      CodecError: with the C++ decoder's message, for malformed / corrupt / unsupported blobs.
    """
    info = parse_info(blob)
    lib, blob = _load(), bytes(blob)
    out = np.empty(info.num_elements, dtype=np.float32)
    err = ctypes.create_string_buffer(_ERR_LEN)
    _check(lib.dc_codec_decode_dense(blob, len(blob), _ptr(out, ctypes.c_float), out.size, err, _ERR_LEN), err)
    return out.reshape(info.shape)


def decode_streams(blob: bytes, info: BlobInfo | None = None, out=None):
    """(relative indices, codebook indices) as stored, decoded by the C++ core.

    `info` and `out` (two preallocated uint8 arrays) let benchmarks time the decoding alone.
    """
    info = info or parse_info(blob)
    lib = _load()
    if out is None:
        code_count = (info.num_elements if info.dense_layout else
                      info.num_nonzeros * info.block_len if info.block_axis else info.num_nonzeros)
        out = (np.empty(0 if info.dense_layout else info.num_entries, np.uint8), np.empty(code_count, np.uint8))
    delta, code = out
    err = ctypes.create_string_buffer(_ERR_LEN)
    _check(lib.dc_codec_decode_streams(blob, len(blob), _ptr(delta, ctypes.c_uint8), delta.size,
                                       _ptr(code, ctypes.c_uint8), code.size, err, _ERR_LEN), err)
    return delta, code


def decode_sparse(blob: bytes) -> SparseMatrix:
    """Decodes a blob with the C++ core into its in-memory sparse form (per-row, 255-step fillers)."""
    lib, blob = _load(), bytes(blob)
    handle = ctypes.c_void_p()
    dims = (ctypes.c_int64 * 2)()
    entries, centroids = ctypes.c_uint64(), ctypes.c_uint32()
    err = ctypes.create_string_buffer(_ERR_LEN)
    _check(lib.dc_codec_sparse_decode(blob, len(blob), ctypes.byref(handle), dims, ctypes.byref(entries),
                                      ctypes.byref(centroids), err, _ERR_LEN), err)
    try:
        row_ptr = np.empty(dims[0] + 1, np.uint32)
        delta = np.empty(entries.value, np.uint8)
        code = np.empty(entries.value, np.uint8)
        codebook = np.empty(centroids.value, np.float32)
        resident = ctypes.c_uint64()
        lib.dc_codec_sparse_copy(handle, _ptr(row_ptr, ctypes.c_uint32), _ptr(delta, ctypes.c_uint8),
                                 _ptr(code, ctypes.c_uint8), _ptr(codebook, ctypes.c_float), ctypes.byref(resident))
    finally:
        lib.dc_codec_sparse_free(handle)
    return SparseMatrix(rows=dims[0], cols=dims[1], row_ptr=row_ptr, delta=delta, code=code, codebook=codebook,
                        resident_bytes=resident.value)
