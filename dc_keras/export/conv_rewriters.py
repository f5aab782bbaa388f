"""Rewriters of CONV_2D, DEPTHWISE_CONV_2D and embedding GATHER into the dc custom ops DcConv2D,
DcDepthwiseConv2D and DcGather, plus their custom options records (mirrored by the delegate's kernels in
tflite_delegate/src/tflite_kernels/{conv2d,depthwise_conv2d,gather}.cc; offsets in options_layout.h).

Each rewriter has the signature of `rewriters.rewrite_fully_connected` and is listed in `rewriters.REWRITERS`
together with a function giving the op's constant float weights *in the Keras layer's layout* (so that the
exporter can name the op after the Keras layer by matching weight digests).

Weight layouts in the blob (what the kernels compute on; rows/cols are those of dc::codec::SparseMatrix):
  DcConv2D           TFLite's own filter [out_c, kh, kw, in_c]: rows = out_c, cols = kh * kw * in_c (im2col order)
  DcDepthwiseConv2D  TFLite's [1, kh, kw, out_c] transposed to [out_c, kh * kw] (layout 1 in the options), so
                     that a row lists one output channel's nonzero taps
  DcGather           the embedding table [vocab, dim] as it is: one row per token
"""
from __future__ import annotations

import dataclasses
import struct
from typing import TYPE_CHECKING, Optional, Tuple, Union

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from dc_keras.export import flatbuffer
from dc_keras.export.options import ACTIVATIONS

if TYPE_CHECKING:  # rewriters imports this module to fill REWRITERS: import it lazily (see _base)
    from dc_keras.export.rewriters import RewriteSettings, Skipped

CONV_CUSTOM_CODE = "DcConv2D"
DEPTHWISE_CUSTOM_CODE = "DcDepthwiseConv2D"
GATHER_CUSTOM_CODE = "DcGather"

BLOB_INPUTS = {CONV_CUSTOM_CODE: 1, DEPTHWISE_CUSTOM_CODE: 1, GATHER_CUSTOM_CODE: 1}
"""custom code -> index of the blob among the op's inputs (for the report / dc-inspect)."""

PADDINGS = {0: "SAME", 1: "VALID"}  # TFLite's Padding enum
DEPTHWISE_LAYOUT_TRANSPOSED = 1     # blob [out_c, kh * kw]


def _base():
    from dc_keras.export import rewriters

    return rewriters


# ---- custom options records ---------------------------------------------------------------------------------

_CONV_FORMAT = "<4sBBBBiiiiiiii"  # magic, version, activation, padding, reserved, out_c, kh, kw, in_c, sh, sw, dh, dw
_DW_FORMAT = "<4sBBBBiiiiiiii"    # magic, version, activation, padding, layout, out_c, kh, kw, multiplier, sh, sw, dh, dw
_GATHER_FORMAT = "<4sBBBBii"      # magic, version, 3 reserved, vocab, dim
_VERSION = 1


def _check_magic(data: bytes, fmt: str, magic: bytes, op: str) -> tuple:
    size = struct.calcsize(fmt)
    if len(data) != size:
        raise ValueError(f"{op} options must be {size} bytes, got {len(data)}")
    fields = struct.unpack(fmt, bytes(data))
    if fields[0] != magic or fields[1] != _VERSION:
        raise ValueError(f"not {op} options of version {_VERSION} (magic {fields[0]!r}, version {fields[1]})")
    return fields[2:]


def _check_conv_fields(op: str, activation: int, padding: int, sizes: dict) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"fused activation {activation} is not supported by {op}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be 0 (SAME) or 1 (VALID), got {padding}")
    bad = {k: v for k, v in sizes.items() if int(v) < 1}
    if bad:
        raise ValueError(f"{op}: sizes must be >= 1, got {bad}")


@dataclasses.dataclass(frozen=True)
class Conv2DOptions:
    """What DcConv2D needs besides its blob and bias (40 bytes)."""

    fused_activation: int
    padding: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    in_channels: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int

    def _sizes(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("fused_activation", "padding")}

    def pack(self) -> bytes:
        _check_conv_fields(CONV_CUSTOM_CODE, self.fused_activation, self.padding, self._sizes())
        return struct.pack(_CONV_FORMAT, b"DCCV", _VERSION, self.fused_activation, self.padding, 0,
                           self.out_channels, self.kernel_h, self.kernel_w, self.in_channels, self.stride_h,
                           self.stride_w, self.dilation_h, self.dilation_w)

    @classmethod
    def unpack(cls, data: bytes) -> "Conv2DOptions":
        activation, padding, _, *sizes = _check_magic(data, _CONV_FORMAT, b"DCCV", CONV_CUSTOM_CODE)
        options = cls(activation, padding, *sizes)
        _check_conv_fields(CONV_CUSTOM_CODE, activation, padding, options._sizes())
        return options


@dataclasses.dataclass(frozen=True)
class DepthwiseConv2DOptions:
    """What DcDepthwiseConv2D needs besides its blob and bias (40 bytes). in_channels = out_channels / multiplier."""

    fused_activation: int
    padding: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    depth_multiplier: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    layout: int = DEPTHWISE_LAYOUT_TRANSPOSED

    def _sizes(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("fused_activation", "padding", "layout")}

    def _check(self) -> None:
        _check_conv_fields(DEPTHWISE_CUSTOM_CODE, self.fused_activation, self.padding, self._sizes())
        if self.layout != DEPTHWISE_LAYOUT_TRANSPOSED:
            raise ValueError(f"DcDepthwiseConv2D layout must be {DEPTHWISE_LAYOUT_TRANSPOSED}, got {self.layout}")
        if self.out_channels % self.depth_multiplier:
            raise ValueError(f"out_channels {self.out_channels} is not a multiple of depth_multiplier "
                             f"{self.depth_multiplier}")

    def pack(self) -> bytes:
        self._check()
        return struct.pack(_DW_FORMAT, b"DCDW", _VERSION, self.fused_activation, self.padding, self.layout,
                           self.out_channels, self.kernel_h, self.kernel_w, self.depth_multiplier, self.stride_h,
                           self.stride_w, self.dilation_h, self.dilation_w)

    @classmethod
    def unpack(cls, data: bytes) -> "DepthwiseConv2DOptions":
        activation, padding, layout, *sizes = _check_magic(data, _DW_FORMAT, b"DCDW", DEPTHWISE_CUSTOM_CODE)
        options = cls(activation, padding, *sizes, layout=layout)
        options._check()
        return options


@dataclasses.dataclass(frozen=True)
class GatherOptions:
    """What DcGather needs besides its blob (16 bytes)."""

    vocab: int
    dim: int

    def pack(self) -> bytes:
        if self.vocab < 1 or self.dim < 1:
            raise ValueError(f"DcGather table must be non-empty, got [{self.vocab}, {self.dim}]")
        return struct.pack(_GATHER_FORMAT, b"DCGA", _VERSION, 0, 0, 0, self.vocab, self.dim)

    @classmethod
    def unpack(cls, data: bytes) -> "GatherOptions":
        r0, r1, r2, vocab, dim = _check_magic(data, _GATHER_FORMAT, b"DCGA", GATHER_CUSTOM_CODE)
        if r0 or r1 or r2:
            raise ValueError("DcGather options: reserved bytes must be 0")
        return cls(vocab, dim)


OPTIONS_CLASSES = {CONV_CUSTOM_CODE: Conv2DOptions, DEPTHWISE_CUSTOM_CODE: DepthwiseConv2DOptions,
                   GATHER_CUSTOM_CODE: GatherOptions}
"""custom code -> options class with unpack(bytes), for validating files."""


# ---- weights of the stock ops ------------------------------------------------------------------------------

def _constant_float(model, subgraph, index: int) -> Optional[np.ndarray]:
    if index < 0:
        return None
    tensor = subgraph.tensors[index]
    if tensor.type != schema.TensorType.FLOAT32:
        return None
    return flatbuffer.tensor_data(model, tensor)


def _inputs(op) -> list:
    return [int(i) for i in op.inputs]


def conv_weights(model, subgraph, op) -> Optional[np.ndarray]:
    """CONV_2D's constant filter in Keras's layout [kh, kw, in_c, out_c] (TFLite stores [out_c, kh, kw, in_c])."""
    inputs = _inputs(op)
    w = _constant_float(model, subgraph, inputs[1]) if len(inputs) > 1 else None
    return None if w is None or w.ndim != 4 else np.transpose(w, (1, 2, 3, 0))


def depthwise_weights(model, subgraph, op) -> Optional[np.ndarray]:
    """DEPTHWISE_CONV_2D's constant filter [1, kh, kw, in_c * mult]: the same bytes as Keras's
    [kh, kw, in_c, mult] kernel."""
    inputs = _inputs(op)
    w = _constant_float(model, subgraph, inputs[1]) if len(inputs) > 1 else None
    return None if w is None or w.ndim != 4 else w


def gather_weights(model, subgraph, op) -> Optional[np.ndarray]:
    """GATHER's constant params (an embedding table [vocab, dim], Keras's layout)."""
    inputs = _inputs(op)
    w = _constant_float(model, subgraph, inputs[0]) if inputs else None
    return None if w is None or w.ndim != 2 else w


# ---- shared compression step -------------------------------------------------------------------------------

def _check_float_io(subgraph, op, layer: str, op_name: str) -> Optional["Skipped"]:
    x, out = subgraph.tensors[_inputs(op)[0]], subgraph.tensors[int(op.outputs[0])]
    if x.type != schema.TensorType.FLOAT32 or out.type != schema.TensorType.FLOAT32:
        return _base().Skipped(layer, op_name, "activations are not float32 (a quantized model?)")
    return None


def _activation_and_bias(model, subgraph, op, layer: str, op_name: str,
                         out_c: int) -> Union[Tuple[int, int], "Skipped"]:
    """(fused activation, bias tensor index or -1) of a conv op, or Skipped when the delegate cannot fuse the
    activation or the bias is not a constant float32 vector of out_c values."""
    o = op.builtinOptions
    activation = int(o.fusedActivationFunction) if o is not None else 0
    if activation not in ACTIVATIONS:
        return _base().Skipped(layer, op_name, f"fused activation {activation} not supported by the delegate")
    inputs = _inputs(op)
    index = inputs[2] if len(inputs) > 2 else -1
    if index < 0:
        return activation, -1
    bias = _constant_float(model, subgraph, index)
    if bias is None or bias.size != out_c:
        return _base().Skipped(layer, op_name, f"bias is not a constant float32 vector of {out_c} values")
    return activation, index


def _channels(subgraph, index: int) -> Optional[int]:
    shape = subgraph.tensors[index].shape
    if shape is None or len(shape) != 4 or int(shape[3]) < 1:
        return None
    return int(shape[3])


def _window_options(o) -> dict:
    """padding, strides and dilations from the builtin options `o` of a CONV_2D or DEPTHWISE_CONV_2D (TFLite's
    defaults when the op has none), as keyword arguments of Conv2DOptions / DepthwiseConv2DOptions."""
    if o is None:
        return dict(padding=0, stride_h=1, stride_w=1, dilation_h=1, dilation_w=1)
    # max(1, ...): a zero dilation factor is read as no dilation (the kernels reject factors below 1).
    return dict(padding=int(o.padding), stride_h=int(o.strideH), stride_w=int(o.strideW),
                dilation_h=max(1, int(o.dilationHFactor)), dilation_w=max(1, int(o.dilationWFactor)))


# ---- rewriters ---------------------------------------------------------------------------------------------

def rewrite_conv_2d(model: "schema.ModelT", subgraph: "schema.SubGraphT", op: "schema.OperatorT", layer: str,
                    settings: "RewriteSettings") -> Optional["Skipped"]:
    """CONV_2D with a constant float32 filter [out_c, kh, kw, in_c] -> DcConv2D (blob in the same layout)."""
    name, base = "CONV_2D", _base()
    inputs = _inputs(op)
    weights = _constant_float(model, subgraph, inputs[1]) if len(inputs) > 1 else None
    if weights is None or weights.ndim != 4:
        return base.Skipped(layer, name, "filter is not a constant float32 4-D tensor")
    skipped = _check_float_io(subgraph, op, layer, name)
    if skipped:
        return skipped
    out_c, kh, kw, in_c = (int(d) for d in weights.shape)
    if _channels(subgraph, inputs[0]) != in_c:
        return base.Skipped(layer, name, "input is not NHWC with the filter's channel count (grouped conv?)")
    fused = _activation_and_bias(model, subgraph, op, layer, name, out_c)
    if isinstance(fused, base.Skipped):
        return fused
    activation, bias_index = fused
    blob = base.encode_weights(weights, layer, name, "conv", settings)
    if isinstance(blob, base.Skipped):
        return blob
    options = Conv2DOptions(fused_activation=activation, out_channels=out_c, kernel_h=kh, kernel_w=kw,
                            in_channels=in_c, **_window_options(op.builtinOptions))
    base.replace_op(model, subgraph, op, layer, CONV_CUSTOM_CODE, blob, [inputs[0], "blob", bias_index],
                    options.pack())
    return None


def rewrite_depthwise_conv_2d(model: "schema.ModelT", subgraph: "schema.SubGraphT", op: "schema.OperatorT",
                              layer: str, settings: "RewriteSettings") -> Optional["Skipped"]:
    """DEPTHWISE_CONV_2D with a constant float32 filter [1, kh, kw, out_c] -> DcDepthwiseConv2D, the blob
    holding the filter transposed to [out_c, kh * kw] (one row of taps per output channel)."""
    name, base = "DEPTHWISE_CONV_2D", _base()
    inputs = _inputs(op)
    weights = _constant_float(model, subgraph, inputs[1]) if len(inputs) > 1 else None
    if weights is None or weights.ndim != 4 or weights.shape[0] != 1:
        return base.Skipped(layer, name, "filter is not a constant float32 [1, kh, kw, channels] tensor")
    skipped = _check_float_io(subgraph, op, layer, name)
    if skipped:
        return skipped
    _, kh, kw, out_c = (int(d) for d in weights.shape)
    in_c = _channels(subgraph, inputs[0])
    # The multiplier comes from the shapes: newer converters leave the depthMultiplier option stale.
    if in_c is None or out_c % in_c:
        return base.Skipped(layer, name, f"input channels {in_c} do not divide the filter's {out_c} channels")
    fused = _activation_and_bias(model, subgraph, op, layer, name, out_c)
    if isinstance(fused, base.Skipped):
        return fused
    activation, bias_index = fused
    transposed = np.ascontiguousarray(weights.reshape(kh * kw, out_c).T)
    blob = base.encode_weights(transposed, layer, name, "conv", settings)
    if isinstance(blob, base.Skipped):
        return blob
    options = DepthwiseConv2DOptions(fused_activation=activation, out_channels=out_c, kernel_h=kh, kernel_w=kw,
                                     depth_multiplier=out_c // in_c, **_window_options(op.builtinOptions))
    base.replace_op(model, subgraph, op, layer, DEPTHWISE_CUSTOM_CODE, blob, [inputs[0], "blob", bias_index],
                    options.pack())
    return None


def rewrite_gather(model: "schema.ModelT", subgraph: "schema.SubGraphT", op: "schema.OperatorT", layer: str,
                   settings: "RewriteSettings") -> Optional["Skipped"]:
    """GATHER(params, indices) on axis 0 with a constant float32 [vocab, dim] table (an embedding lookup) ->
    DcGather(indices, blob): the runtime input first, as the delegate's kernel contract wants."""
    name, base = "GATHER", _base()
    inputs = _inputs(op)
    table = gather_weights(model, subgraph, op)
    if table is None or len(inputs) != 2:
        return base.Skipped(layer, name, "params are not a constant float32 [vocab, dim] table")
    o = op.builtinOptions
    axis = int(o.axis) if o is not None else 0
    batch_dims = int(o.batchDims) if o is not None else 0
    if axis not in (0, -2) or batch_dims != 0:
        return base.Skipped(layer, name, f"gather on axis {axis} with batch_dims {batch_dims} (only axis 0 is an "
                                         "embedding lookup)")
    indices, out = subgraph.tensors[inputs[1]], subgraph.tensors[int(op.outputs[0])]
    if indices.type not in (schema.TensorType.INT32, schema.TensorType.INT64):
        return base.Skipped(layer, name, "indices are not int32 or int64")
    if out.type != schema.TensorType.FLOAT32:
        return base.Skipped(layer, name, "output is not float32")
    blob = base.encode_weights(table, layer, name, "embedding", settings)
    if isinstance(blob, base.Skipped):
        return blob
    options = GatherOptions(vocab=int(table.shape[0]), dim=int(table.shape[1]))
    base.replace_op(model, subgraph, op, layer, GATHER_CUSTOM_CODE, blob, [inputs[1], "blob"], options.pack())
    return None


# GATHERs without a constant float table are index arithmetic (shape gathers of Tensordot), not embedding
# layers: the exporter leaves them out of the "left stock" list.
rewrite_gather.report_without_weights = False


CONV_REWRITERS = {
    schema.BuiltinOperator.CONV_2D: (rewrite_conv_2d, conv_weights),
    schema.BuiltinOperator.DEPTHWISE_CONV_2D: (rewrite_depthwise_conv_2d, depthwise_weights),
    schema.BuiltinOperator.GATHER: (rewrite_gather, gather_weights),
}
"""The entries of rewriters.REWRITERS for these ops: builtin code -> (rewriter, weights in Keras layout)."""
