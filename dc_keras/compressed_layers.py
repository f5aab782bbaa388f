"""Keras 3 layers that keep Deep Compression weights compressed in memory and on disk.

Each layer holds its weight as one non-trainable uint8 variable `blob` (the codec's format, see
ops/codec/FORMAT.md) and computes with dc_keras's TensorFlow custom ops:

  CompressedDense      y = x @ W^T + b via DcSparseMatMul on the sparse codebook form (W stored as
                       [units, in], TFLite's fully-connected layout), or mode="dense": cached DcDecode + matmul
  CompressedConv2D     cached DcDecode of the HWIO kernel + the same convolution Keras's Conv2D runs
  CompressedEmbedding  DcEmbeddingLookup: only the requested rows are expanded

`compress_model(model)` rewrites a stripped, pruned and clustered Keras model (Sequential or functional)
into these layers. The layers are registered as Keras serializables (package "dc_keras"), so .keras
files load without custom_objects once dc_keras is imported.

The layers are inference-only: their ops have no gradient (differentiating through them raises).

This module is imported eagerly by `import dc_keras` for registration, so it must stay light: the op
library (and its first-use C++ build) and the codec are imported only when a layer is built or compressed.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

import keras
import numpy as np

from dc_keras import layer_registry
from dc_keras.limits import MAX_BITS as _MAX_BITS

__all__ = ["CompressedConv2D", "CompressedDense", "CompressedEmbedding", "compress_model"]

_PACKAGE = "dc_keras"


def _ops():
    from dc_keras import ops  # builds/loads the C++ library on first use

    return ops


def _tf():
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"dc_keras compressed layers run TensorFlow custom ops and need the TensorFlow Keras backend, "
            f"but KERAS_BACKEND is {keras.backend.backend()!r}")
    import tensorflow as tf

    return tf


def _blob_array(blob) -> np.ndarray:
    if isinstance(blob, np.ndarray):
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise TypeError(f"blob must be a 1-D uint8 array, got {blob.dtype} of shape {blob.shape}")
        return blob
    return np.frombuffer(bytes(blob), dtype=np.uint8)


def _blob_shape(blob: np.ndarray) -> tuple:
    from dc_keras import codec

    try:
        return tuple(int(d) for d in codec.parse_info(blob.tobytes()).shape)
    except codec.CodecError as error:
        raise ValueError(f"invalid dc_keras blob: {error}") from error


class _CompressedLayer(keras.layers.Layer):
    """Shared plumbing: the uint8 `blob` weight, its optional initial value, and config round trip."""

    def __init__(self, blob=None, blob_size: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self._initial_blob = None if blob is None else _blob_array(blob)
        if self._initial_blob is not None:
            if blob_size is not None and blob_size != self._initial_blob.size:
                raise ValueError(f"blob_size={blob_size} but the blob given has {self._initial_blob.size} bytes")
            blob_size = self._initial_blob.size
        if blob_size is None:
            raise ValueError(f"{type(self).__name__} needs `blob` (bytes from dc_keras.codec.encode) or "
                             "`blob_size` (when weights are loaded afterwards)")
        self.blob_size = int(blob_size)

    def _add_blob(self):
        initial = self._initial_blob

        def initializer(shape, dtype=None):
            return np.zeros(shape, np.uint8) if initial is None else initial.copy()

        self.blob = self.add_weight(name="blob", shape=(self.blob_size,), dtype="uint8",
                                    initializer=initializer, trainable=False)
        self._initial_blob = None  # the variable owns it now

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config["blob_size"] = self.blob_size
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CompressedDense(_CompressedLayer):
    """Fully-connected layer whose kernel is a compressed blob holding W = kernel^T as [units, in].

    Args:
      units: output features.
      input_dim: input features (taken from the blob when `blob` is given).
      blob: bytes from `dc_keras.codec.encode(kernel.T, ...)`; omit when weights are loaded later.
      blob_size: byte length of the blob (config round trip; implied by `blob`).
      activation, use_bias: as in keras.layers.Dense.
      bias: initial bias values (zeros when omitted).
      mode: "sparse" (default) runs DcSparseMatMul: fastest for small batches, never expands W.
        "dense" expands W once (cached by the kernel) and uses tf.matmul: faster for large batches.
    """

    def __init__(self, units: int, input_dim: Optional[int] = None, blob=None, blob_size: Optional[int] = None,
                 activation=None, use_bias: bool = True, bias=None, mode: str = "sparse", **kwargs):
        super().__init__(blob=blob, blob_size=blob_size, **kwargs)
        if mode not in ("sparse", "dense"):
            raise ValueError(f"mode must be 'sparse' or 'dense', got {mode!r}")
        if blob is not None:
            shape = _blob_shape(_blob_array(blob))
            if len(shape) != 2 or shape[0] != units or (input_dim is not None and shape[1] != input_dim):
                raise ValueError(f"CompressedDense(units={units}, input_dim={input_dim}) needs a blob holding "
                                 f"W as [units, input_dim], got a blob of shape {shape}")
            input_dim = shape[1]
        if input_dim is None:
            raise ValueError("CompressedDense needs `input_dim` when no `blob` is given")
        self.units = int(units)
        self.input_dim = int(input_dim)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.mode = mode
        self._initial_bias = None if bias is None else np.asarray(bias, np.float32)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.input_dim:
            raise ValueError(f"{self.name}: input has {input_shape[-1]} features, the compressed kernel expects "
                             f"{self.input_dim}")
        self._add_blob()
        self.bias = None
        if self.use_bias:
            initial = self._initial_bias
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), trainable=False,
                initializer="zeros" if initial is None else (lambda shape, dtype=None: initial.copy()))
        self._initial_bias = None

    def call(self, inputs):
        tf = _tf()
        ops = _ops()
        x = tf.cast(inputs, tf.float32)
        leading = tf.shape(x)[:-1]
        x2 = tf.reshape(x, [-1, self.input_dim])
        if self.mode == "sparse":
            y = ops.sparse_matmul(x2, self.blob)
        else:
            w = tf.reshape(ops.decode(self.blob), [self.units, self.input_dim])
            y = tf.matmul(x2, w, transpose_b=True)
        y = tf.reshape(y, tf.concat([leading, [self.units]], axis=0))
        y.set_shape(tuple(inputs.shape[:-1]) + (self.units,))
        if self.bias is not None:
            y = y + tf.convert_to_tensor(self.bias)
        if self.activation is not None:
            y = self.activation(y)
        return tf.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, input_dim=self.input_dim,
                      activation=keras.activations.serialize(self.activation), use_bias=self.use_bias,
                      mode=self.mode)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CompressedConv2D(_CompressedLayer):
    """2-D convolution whose kernel (Keras HWIO layout) is a compressed blob.

    The kernel is decoded by DcDecode, which caches the dense kernel per op instance, so steady-state
    inference costs the same convolution as keras.layers.Conv2D plus a memcmp of the blob.

    Args: filters, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias as in
      keras.layers.Conv2D; `input_channels` is the kernel's input-channel count (in_channels / groups),
      taken from the blob when given; `blob`, `blob_size`, `bias` as in CompressedDense.
    """

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid", data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias: bool = True, input_channels: Optional[int] = None,
                 blob=None, blob_size: Optional[int] = None, bias=None, **kwargs):
        super().__init__(blob=blob, blob_size=blob_size, **kwargs)
        pair = lambda v: (int(v), int(v)) if isinstance(v, int) else tuple(int(i) for i in v)  # noqa: E731
        self.filters = int(filters)
        self.kernel_size = pair(kernel_size)
        self.strides = pair(strides)
        self.dilation_rate = pair(dilation_rate)
        self.padding = padding.lower()
        self.data_format = (data_format or keras.config.image_data_format()).lower()
        if self.data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
        if blob is not None:
            shape = _blob_shape(_blob_array(blob))
            if len(shape) != 4 or shape[:2] != self.kernel_size or shape[3] != self.filters or (
                    input_channels is not None and shape[2] != input_channels):
                raise ValueError(f"CompressedConv2D(filters={filters}, kernel_size={self.kernel_size}) needs a blob "
                                 f"holding the HWIO kernel, got a blob of shape {shape}")
            input_channels = shape[2]
        if input_channels is None:
            raise ValueError("CompressedConv2D needs `input_channels` when no `blob` is given")
        self.input_channels = int(input_channels)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self._initial_bias = None if bias is None else np.asarray(bias, np.float32)

    @property
    def kernel_shape(self):
        return (*self.kernel_size, self.input_channels, self.filters)

    def build(self, input_shape):
        channels = input_shape[-1] if self.data_format == "channels_last" else input_shape[1]
        if channels is not None and channels % self.input_channels:
            raise ValueError(f"{self.name}: input has {channels} channels, not a multiple of the kernel's "
                             f"{self.input_channels}")
        self._add_blob()
        self.bias = None
        if self.use_bias:
            initial = self._initial_bias
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,), trainable=False,
                initializer="zeros" if initial is None else (lambda shape, dtype=None: initial.copy()))
        self._initial_bias = None

    def call(self, inputs):
        tf = _tf()
        kernel = tf.reshape(_ops().decode(self.blob), self.kernel_shape)
        outputs = keras.ops.conv(tf.cast(inputs, tf.float32), kernel, strides=list(self.strides),
                                 padding=self.padding, dilation_rate=self.dilation_rate,
                                 data_format=self.data_format)
        if self.bias is not None:
            shape = (1, 1, 1, self.filters) if self.data_format == "channels_last" else (1, self.filters, 1, 1)
            outputs = outputs + tf.reshape(tf.convert_to_tensor(self.bias), shape)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return tf.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        # Keras's own helper, so output shapes (padding/dilation rounding) match keras.layers.Conv2D exactly.
        from keras.src.ops.operation_utils import compute_conv_output_shape

        return compute_conv_output_shape(
            input_shape, self.filters, self.kernel_size, strides=self.strides, padding=self.padding,
            data_format=self.data_format, dilation_rate=self.dilation_rate)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      padding=self.padding, data_format=self.data_format, dilation_rate=self.dilation_rate,
                      activation=keras.activations.serialize(self.activation), use_bias=self.use_bias,
                      input_channels=self.input_channels)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CompressedEmbedding(_CompressedLayer):
    """Embedding whose [input_dim, output_dim] table is a compressed blob; lookups expand only the rows used.

    Args: input_dim (vocabulary size), output_dim, mask_zero as in keras.layers.Embedding (taken from the
      blob when given); `blob`, `blob_size` as in CompressedDense. Ids outside [0, input_dim) raise
      tf.errors.InvalidArgumentError.
    """

    def __init__(self, input_dim: Optional[int] = None, output_dim: Optional[int] = None, mask_zero: bool = False,
                 blob=None, blob_size: Optional[int] = None, **kwargs):
        super().__init__(blob=blob, blob_size=blob_size, **kwargs)
        if blob is not None:
            shape = _blob_shape(_blob_array(blob))
            if len(shape) != 2 or (input_dim is not None and shape[0] != input_dim) or (
                    output_dim is not None and shape[1] != output_dim):
                raise ValueError(f"CompressedEmbedding(input_dim={input_dim}, output_dim={output_dim}) needs a "
                                 f"blob holding the [input_dim, output_dim] table, got a blob of shape {shape}")
            input_dim, output_dim = shape
        if input_dim is None or output_dim is None:
            raise ValueError("CompressedEmbedding needs `input_dim` and `output_dim` when no `blob` is given")
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero

    def build(self, input_shape=None):
        self._add_blob()

    def call(self, inputs):
        tf = _tf()
        ids = inputs if inputs.dtype in (tf.int32, tf.int64) else tf.cast(inputs, tf.int32)
        outputs = _ops().embedding_lookup(ids, self.blob)
        outputs.set_shape(tuple(inputs.shape) + (self.output_dim,))
        return tf.cast(outputs, self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return keras.ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(input_dim=self.input_dim, output_dim=self.output_dim, mask_zero=self.mask_zero)
        return config


# ------------------------------------------------------------------------------------------------------------
# compress_model

_CONVERTIBLE = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Embedding)


def _infer_bits(values: np.ndarray, layer_name: str, requested: Optional[int]) -> int:
    """Smallest codebook width that holds every distinct nonzero value exactly (or the requested width)."""
    distinct = np.unique(values[values != 0]).size
    needed = max(1, math.ceil(math.log2(distinct))) if distinct > 1 else 1
    if requested is not None:
        if distinct > 2 ** requested:
            raise ValueError(
                f"layer {layer_name!r} has {distinct} distinct nonzero weights, more than bits={requested} can "
                f"index ({2 ** requested}); compress_model stores weights exactly, so cluster the layer to at "
                f"most {2 ** requested} values first (dc_keras.cluster_weights, then strip_clustering)")
        return int(requested)
    if distinct > 2 ** _MAX_BITS:
        raise ValueError(
            f"layer {layer_name!r} has {distinct} distinct nonzero weights but a dc_keras codebook holds at most "
            f"{2 ** _MAX_BITS}: cluster it first (dc_keras.cluster_weights, then strip_clustering), or leave it "
            f"uncompressed with layer_options={{{layer_name!r}: None}}")
    return needed


def _check_plain(layer) -> None:
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise ValueError(f"layer {layer.name!r} uses LoRA or Keras quantization, which compress_model does not "
                         f"convert; merge/remove it first or skip the layer with layer_options={{{layer.name!r}: None}}")
    if getattr(layer, "dtype_policy", None) is not None and layer.dtype_policy.variable_dtype != "float32":
        raise ValueError(f"layer {layer.name!r} has {layer.dtype_policy.variable_dtype} weights; compress_model "
                         "expects float32 weights")


def _convert(layer, options: Mapping[str, Any], dense_mode: str):
    """The compressed replacement of one Dense/Conv2D/Embedding layer."""
    from dc_keras import codec

    _check_plain(layer)
    kind = layer_registry.layer_kind(layer)
    index_bits = options.get("index_bits", layer_registry.DEFAULT_INDEX_BITS[kind])
    coder = options.get("coder", "huffman")
    common = dict(name=layer.name, dtype=layer.dtype_policy)

    def encode(w):
        bits = _infer_bits(w, layer.name, options.get("bits"))
        return codec.encode(w, bits=bits, index_bits=index_bits, coder=coder,
                            layout=options.get("layout", "auto"))

    if isinstance(layer, keras.layers.Dense):
        kernel = np.asarray(layer.kernel.numpy(), np.float32)
        return CompressedDense(
            units=layer.units, blob=encode(np.ascontiguousarray(kernel.T)), activation=layer.activation,
            use_bias=layer.use_bias, bias=None if layer.bias is None else layer.bias.numpy(),
            mode=options.get("mode", dense_mode), **common)
    if isinstance(layer, keras.layers.Conv2D):
        kernel = np.asarray(layer.kernel.numpy(), np.float32)
        return CompressedConv2D(
            filters=layer.filters, kernel_size=layer.kernel_size, strides=layer.strides, padding=layer.padding,
            data_format=layer.data_format, dilation_rate=layer.dilation_rate, activation=layer.activation,
            use_bias=layer.use_bias, bias=None if layer.bias is None else layer.bias.numpy(),
            blob=encode(kernel), **common)
    table = np.asarray(layer.embeddings.numpy(), np.float32)
    return CompressedEmbedding(mask_zero=layer.mask_zero, blob=encode(table), **common)


def compress_model(model: keras.Model, bits: Optional[int] = None, index_bits: Optional[int] = None,
                   coder: str = "huffman", dense_mode: str = "sparse",
                   layer_options: Optional[Mapping[str, Optional[Mapping[str, Any]]]] = None) -> keras.Model:
    """Rebuilds a stripped, pruned and clustered Keras model with compressed layers.

    Every keras.layers.Dense, Conv2D and Embedding (exact types; subclasses may compute differently and are
    copied unchanged) becomes CompressedDense / CompressedConv2D / CompressedEmbedding holding its weight
    as a codec blob; all other layers are cloned with their weights. Weights are stored exactly, so the
    result's outputs equal the original's up to float summation order.

    Args:
      model: a built Sequential or functional model (nested models are converted recursively). Its
        compressible weights must have at most 2^bits distinct nonzero values (after
        dc_keras.strip_clustering); zeros are the pruned positions.
      bits: codebook index width for every layer; default: the smallest width holding the layer's distinct
        nonzero values (at most 8).
      index_bits: relative-index width; default: the paper's per-kind value from dc_keras.layer_registry
        (conv 8, fully-connected 5, embedding 5).
      coder: entropy coder of both streams: "huffman" (the paper), "rans" or "raw".
      dense_mode: CompressedDense mode, "sparse" (DcSparseMatMul) or "dense" (cached decode + matmul).
      layer_options: per-layer overrides by layer name: a dict with any of bits, index_bits, coder, layout,
        mode; or None to leave that layer uncompressed.

    Returns:
      A new model; the original is unchanged.
    """
    if not model.built:
        raise ValueError("compress_model needs a built model: call it on data or give it an Input first")
    layer_options = dict(layer_options or {})
    defaults = {k: v for k, v in (("bits", bits), ("index_bits", index_bits), ("coder", coder)) if v is not None}
    copies = []

    def clone(layer):
        if type(layer) in _CONVERTIBLE and not (layer.name in layer_options and layer_options[layer.name] is None):
            options = {**defaults, **(layer_options.get(layer.name) or {})}
            return _convert(layer, options, dense_mode)
        new = layer.__class__.from_config(layer.get_config())
        copies.append((layer, new))
        return new

    unknown = set(layer_options) - {layer.name for layer in _all_layers(model)}
    if unknown:
        raise ValueError(f"layer_options names layers that are not in the model: {sorted(unknown)}")
    compressed = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in copies:
        new.set_weights(old.get_weights())
    return compressed


def _all_layers(model):
    return layer_registry.walk(model, containers=True)
