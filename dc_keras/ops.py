"""TensorFlow custom ops that compute directly on Deep Compression blobs (ops/tf/dc_tf_ops.cc).

  decode(blob) -> float32 tensor               dense weights, shape from the blob header
  sparse_matmul(x, blob) -> float32 [batch, out]  x @ W^T on the sparse codebook form (blob holds W as [out, in])
  embedding_lookup(ids, blob) -> float32 [..., dim] rows of a compressed [vocab, dim] table
  decode_count() -> int                        decodes performed so far in this process (caching is observable)

The C++ library is compiled against the installed TensorFlow on first import (cached by
dc_keras._native) and loaded with tf.load_op_library. Importing this module is therefore also what makes
a SavedModel that contains these ops loadable: `import dc_keras.ops` before `tf.saved_model.load`.

Every kernel caches the decoded form of the blobs it sees, keyed by the blob's bytes: running the same
compressed layer again costs a memcmp of the blob, not a Huffman decode. Corrupt or mismatched inputs
raise tf.errors.InvalidArgumentError naming the problem. The ops have no gradient: differentiating through
them raises LookupError naming the op, because compressed weights are frozen and a silent zero gradient
would be wrong.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import tensorflow as tf

from dc_keras import _native

__all__ = ["OpLibraryError", "decode", "decode_count", "embedding_lookup", "library_path", "load_library",
           "sparse_matmul"]

_OP_NAMES = ("DcDecode", "DcSparseMatMul", "DcEmbeddingLookup")
# Default of the ops' max_decoded_bytes attribute (codec::kDefaultMaxDecodedBytes in ops/codec/dc_codec.h).
DEFAULT_MAX_DECODED_BYTES = 2**31


class OpLibraryError(RuntimeError):
    """The custom-op library could not be built or loaded; the message carries the compiler/loader output."""


_lock = threading.Lock()
_module = None
_path: Path | None = None


def _build() -> Path:
    # The op, the kernel library (DcSparseMatMul runs the delegate's FC loops) and the codec core, without the
    # codec's C API: that would export dc_codec_* symbols from this library too, which could clash with
    # libdc_codec.so loaded in the same process.
    sources, include_dirs = _native.cpp_library("tf_ops")
    # The TF version goes into the flags so that the cache key (a hash of sources and flags) changes when
    # TensorFlow is upgraded in place: a library built against another TF's ABI would fail to load.
    flags = [*tf.sysconfig.get_compile_flags(), f'-DDC_KERAS_TF_VERSION="{tf.__version__}"',
             "-Wno-unused-parameter", "-Wno-sign-compare", "-Wno-deprecated-declarations",
             "-Wno-interference-size"]
    return _native.build_shared_library(
        "dc_tf_ops", sources, include_dirs=include_dirs,
        extra_compile_flags=flags, extra_link_flags=tf.sysconfig.get_link_flags())


def load_library():
    """Builds (first use only) and loads the op library; returns the module of generated op wrappers.

    Raises:
      OpLibraryError: when compiling or loading fails, with the compiler's or loader's message.
    """
    global _module, _path
    with _lock:
        if _module is not None:
            return _module
        try:
            path = _build()
        except _native.NativeBuildError as error:
            raise OpLibraryError(f"dc_keras.ops: cannot build the TensorFlow custom-op library: {error}") from error
        try:
            module = tf.load_op_library(str(path))
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError, OSError) as error:
            raise OpLibraryError(
                f"dc_keras.ops: cannot load {path} into TensorFlow {tf.__version__}: {error}. If TensorFlow "
                f"was changed since the library was built, delete {path.parent} to force a rebuild.") from error
        _register_gradients()
        _module, _path = module, path
        return module


def library_path() -> Path:
    """Path of the loaded op library (building and loading it if needed)."""
    load_library()
    assert _path is not None
    return _path


def _no_gradient(op_name: str):
    def gradient(op, *grads):  # noqa: ARG001 (TensorFlow's gradient signature)
        raise LookupError(
            f"dc_keras op {op_name} has no gradient: its weights are a frozen compressed blob, and "
            "a gradient through it is not implemented. Train the uncompressed model (pruning/clustering "
            "wrappers) and compress afterwards, or stop the gradient (tf.stop_gradient) before this op.")
    return gradient


def _register_gradients() -> None:
    for name in _OP_NAMES:
        try:
            tf.RegisterGradient(name)(_no_gradient(name))
        except KeyError:
            pass  # already registered (module reloaded in the same process)


def _as_blob(blob) -> tf.Tensor:
    """Accepts bytes-like objects, numpy uint8 arrays and uint8 tensors/variables."""
    if isinstance(blob, (bytes, bytearray, memoryview)):
        return tf.constant(np.frombuffer(bytes(blob), dtype=np.uint8))
    if isinstance(blob, np.ndarray):
        if blob.dtype != np.uint8:
            raise TypeError(f"blob must be uint8, got a numpy array of dtype {blob.dtype}")
        return tf.constant(blob)
    blob = tf.convert_to_tensor(blob)
    if blob.dtype != tf.uint8:
        raise TypeError(f"blob must be a uint8 tensor, got {blob.dtype.name}")
    return blob


def _limit(max_decoded_bytes: int | None) -> dict:
    """The max_decoded_bytes attribute to pass, or none (the op's default, DEFAULT_MAX_DECODED_BYTES)."""
    if max_decoded_bytes is None:
        return {}
    if int(max_decoded_bytes) < 1:
        raise ValueError(f"max_decoded_bytes must be >= 1, got {max_decoded_bytes}")
    return {"max_decoded_bytes": int(max_decoded_bytes)}


def decode(blob, name: str | None = None, max_decoded_bytes: int | None = None) -> tf.Tensor:
    """Dense float32 weights of `blob` (C order, shape from its header); cached per kernel.

    Args:
      max_decoded_bytes: most bytes decoding may take (the float32 output plus the decoded symbol streams);
        default DEFAULT_MAX_DECODED_BYTES (2 GiB).
    Raises:
      tf.errors.ResourceExhaustedError: the blob's header declares a tensor over max_decoded_bytes.
      tf.errors.InvalidArgumentError: corrupt blob.
    """
    return load_library().dc_decode(_as_blob(blob), name=name, **_limit(max_decoded_bytes))


def sparse_matmul(x, blob, name: str | None = None, max_decoded_bytes: int | None = None) -> tf.Tensor:
    """x @ W^T for W = the [out, in] weight stored in `blob`, computed on its sparse codebook form.

    Args:
      x: float32 [batch, in] (other float dtypes are cast to float32).
      blob: the compressed weight, holding W as [out, in] (TFLite fully-connected layout).
      max_decoded_bytes: most bytes the decoded sparse form may take; default DEFAULT_MAX_DECODED_BYTES.
    Returns:
      float32 [batch, out].
    Raises:
      tf.errors.InvalidArgumentError: corrupt blob, or x's inner dimension differs from `in`.
      tf.errors.ResourceExhaustedError: the blob decodes to more than max_decoded_bytes.
    """
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.float32:
        if not x.dtype.is_floating:
            raise TypeError(f"sparse_matmul: x must be a float tensor, got {x.dtype.name}")
        x = tf.cast(x, tf.float32)
    return load_library().dc_sparse_mat_mul(x, _as_blob(blob), name=name, **_limit(max_decoded_bytes))


def embedding_lookup(ids, blob, name: str | None = None, max_decoded_bytes: int | None = None) -> tf.Tensor:
    """Rows `ids` (int32/int64, any shape) of the compressed [vocab, dim] table in `blob`: [..., dim].

    `max_decoded_bytes` bounds the decoded sparse form of the table (default DEFAULT_MAX_DECODED_BYTES).

    Raises:
      tf.errors.InvalidArgumentError: an id outside [0, vocab), or a corrupt blob.
      tf.errors.ResourceExhaustedError: the table decodes to more than max_decoded_bytes.
    """
    ids = tf.convert_to_tensor(ids)
    if ids.dtype not in (tf.int32, tf.int64):
        if not ids.dtype.is_integer:
            raise TypeError(f"embedding_lookup: ids must be integers, got {ids.dtype.name}")
        ids = tf.cast(ids, tf.int64)
    return load_library().dc_embedding_lookup(ids, _as_blob(blob), name=name, **_limit(max_decoded_bytes))


def decode_count() -> int:
    """How many blob decodes the kernels of this process have performed (cache misses)."""
    return int(load_library().dc_decode_count())


# Load at import: a SavedModel containing these ops can only be loaded once they are registered.
load_library()
