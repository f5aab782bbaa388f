"""What every rewriter shares: the export settings, the "left stock" result, weight encoding and op
replacement. Kept apart from the registry (rewriters.py) so that rewriter modules import it without a loop.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Union

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from dc_keras import layer_registry, limits
from dc_keras.export import flatbuffer
from dc_keras.export.errors import ExportError
from dc_keras.per_layer import is_given, resolve_per_layer

BitsOption = Union[None, int, Mapping[str, int]]
IndexBitsOption = Union[None, int, str, Mapping[str, Union[int, str]]]

AUTO = "auto"
"""index_bits value: per layer, the width whose coded index stream is smallest (codec.smallest_index_bits)."""

BLOB_SUFFIX = "/dc_blob"
"""Blob tensors are named <layer name><BLOB_SUFFIX>, which is how dc-inspect names layers from a file."""


@dataclasses.dataclass
class RewriteSettings:
    """Options of export_tflite that rewriters honour."""

    bits: BitsOption = None
    index_bits: IndexBitsOption = None
    coder: str = "huffman"
    layout: str = "sparse"
    min_rate: float = 2.0  # compress only when the blob is at least this many times smaller than the floats

    def __post_init__(self):
        # Checked before the converter runs, so that a width no file can store fails at once.
        for name, check in (("bits", limits.check_bits), ("index_bits", limits.check_index_bits)):
            option = getattr(self, name)
            if isinstance(option, Mapping):
                for layer, value in option.items():
                    if not (name == "index_bits" and value == AUTO):
                        check(value, f"{name}[{layer!r}]")
            elif option is not None and not (name == "index_bits" and option == AUTO):
                check(option, name)

    def resolve(self, option: BitsOption, layer: str, default: Optional[int]) -> tuple[Optional[int], bool]:
        """(value, explicitly given) of a per-layer option given as None, an int or a {layer name: int}."""
        value = resolve_per_layer(option, layer, default,
                                  valid=lambda setting, _: setting if setting == AUTO else int(setting))
        return value, is_given(option, layer)


@dataclasses.dataclass
class Skipped:
    """An op left stock, and why."""

    layer: str
    op: str
    reason: str


RewriteResult = Optional[Skipped]  # None: rewritten

Rewriter = Callable[["schema.ModelT", "schema.SubGraphT", "schema.OperatorT", str, "RewriteSettings"], RewriteResult]
"""(model, subgraph, op, layer name, settings) -> None when the op was replaced, else Skipped."""


def encode_weights(stored: np.ndarray, layer: str, op_name: str, kind: str,
                   settings: RewriteSettings, blocks: bool = False) -> Union[bytes, Skipped]:
    """The blob of `stored` (the weights in the kernel's layout), or Skipped when the layer is not
    weight-shared or does not pay to compress; the one policy of every rewriter. Bits come from the number
    of distinct nonzero values unless given, index bits from layer_registry's default for `kind` ("fc",
    "conv", "embedding") unless given, and min_rate is measured against the float32 bytes. With `blocks`
    (an op whose kernel has block loops) an aligned block structure of the weights is detected and stored as
    a block layout when that is not larger (dc_keras.codec.encode's block="auto"; not with layout="dense").
    Raises ExportError when the given bits cannot hold the values or the blob does not decode back to them."""
    stored = np.ascontiguousarray(stored, dtype=np.float32)
    distinct = int(np.unique(stored[stored != 0]).size)
    bits, bits_given = settings.resolve(settings.bits, layer, None)
    index_bits, _ = settings.resolve(settings.index_bits, layer, layer_registry.DEFAULT_INDEX_BITS[kind])
    if bits is None:
        # Weight sharing leaves at most 2^MAX_BITS distinct values; more means the layer was not clustered
        # and stays a stock op.
        if distinct > 1 << limits.MAX_BITS:
            return Skipped(layer, op_name, f"{distinct} distinct nonzero weights (not clustered: at most "
                                           f"{1 << limits.MAX_BITS} are storable)")
        bits = limits.bits_for_values(distinct)
    if distinct > (1 << bits):
        raise ExportError(
            f"layer {layer!r} has {distinct} distinct nonzero weights, more than 2^bits = {1 << bits} "
            f"(bits={bits}{' as given' if bits_given else ''}); cluster it with at most {1 << bits} clusters "
            "or raise bits")

    from dc_keras import codec  # the codec is heavy only on first use

    if index_bits == AUTO:
        index_bits = codec.smallest_index_bits(stored, coder=settings.coder)
    try:
        block = "auto" if blocks and settings.layout != "dense" else None
        blob = codec.encode(stored, bits=bits, index_bits=index_bits, coder=settings.coder, layout=settings.layout,
                            block=block)
    except ValueError as error:
        raise ExportError(f"layer {layer!r}: cannot encode its weights: {error}") from error
    dense_bytes = stored.size * 4
    if len(blob) * settings.min_rate > dense_bytes:
        return Skipped(layer, op_name,
                       f"compressed size {len(blob)} B does not pay against {dense_bytes} B of floats "
                       f"(min_rate {settings.min_rate})")
    # The blob must give back exactly the weights the converter wrote (the clustered values, bit for bit).
    decoded = np.asarray(codec.decode(blob), dtype=np.float32).reshape(stored.shape)
    if not np.array_equal(decoded, stored):  # value equality: a pruned -0.0 comes back as +0.0
        raise ExportError(f"layer {layer!r}: the encoded weights do not decode to the original values")
    return blob


def replace_op(model: "schema.ModelT", subgraph: "schema.SubGraphT", op: "schema.OperatorT", layer: str,
               custom_code: str, blob: bytes, inputs: list, options: bytes) -> None:
    """Turns `op` into the custom op `custom_code` with custom options `options`: `blob` becomes a constant
    uint8 tensor named <layer><BLOB_SUFFIX>, and `inputs` lists the new op inputs, "blob" marking its slot."""
    blob_index = flatbuffer.add_tensor(model, subgraph, layer + BLOB_SUFFIX, [len(blob)], schema.TensorType.UINT8,
                                       blob)
    op.opcodeIndex = flatbuffer.custom_opcode_index(model, custom_code)
    op.inputs = np.asarray([blob_index if i == "blob" else i for i in inputs], dtype=np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.NONE
    op.builtinOptions = None
    op.customOptions = np.frombuffer(options, dtype=np.uint8).copy()
    op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS  # the schema's only value
