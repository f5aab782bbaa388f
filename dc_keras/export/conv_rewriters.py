"""Rewriters of CONV_2D, DEPTHWISE_CONV_2D and embedding GATHER into the dc custom ops DcConv2D,
DcDepthwiseConv2D and DcGather, whose options records (options.py) the delegate's kernels mirror in
tflite_delegate/src/tflite_kernels/{conv2d,depthwise_conv2d,gather}.cc (each file's kLayout).

Each rewriter has the signature of `rewriters.rewrite_fully_connected` and is listed in `rewriters.REWRITERS`
together with a function giving the op's constant float weights *in the Keras layer's layout* (so that the
exporter can name the op after the Keras layer by matching weight digests).

Weight layouts in the blob (what the kernels compute on; rows/cols are those of dc::codec::SparseMatrix):
  DcConv2D           TFLite's own filter [out_c, kh, kw, in_c]: rows = out_c, cols = kh * kw * in_c (im2col order);
                     aligned block structure there is stored as a block layout (the kernel has block loops)
  DcDepthwiseConv2D  TFLite's [1, kh, kw, out_c] transposed to [out_c, kh * kw] (layout 1 in the options), so
                     that a row lists one output channel's nonzero taps
  DcGather           the embedding table [vocab, dim] as it is: one row per token
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from dc_keras.export import flatbuffer, op_specs
from dc_keras.export.options import (ACTIVATIONS, CONV_CUSTOM_CODE, DEPTHWISE_CUSTOM_CODE,  # noqa: F401
                                     DEPTHWISE_LAYOUT_TRANSPOSED, GATHER_CUSTOM_CODE, PADDINGS, Conv2DOptions,
                                     DepthwiseConv2DOptions, GatherOptions)
from dc_keras.export.rewrite_base import RewriteSettings, Skipped, encode_weights, replace_op


# ---- weights of the stock ops ------------------------------------------------------------------------------

def _constant_float(model, subgraph, index: int) -> Optional[np.ndarray]:
    if index < 0:
        return None
    tensor = subgraph.tensors[index]
    if tensor.type != schema.TensorType.FLOAT32:
        return None
    return flatbuffer.tensor_data(model, tensor)


def conv_weights(model, subgraph, op) -> Optional[np.ndarray]:
    """CONV_2D's constant filter in Keras's layout [kh, kw, in_c, out_c] (TFLite stores [out_c, kh, kw, in_c])."""
    inputs = flatbuffer.op_inputs(op)
    w = _constant_float(model, subgraph, inputs[1]) if len(inputs) > 1 else None
    return None if w is None or w.ndim != 4 else np.transpose(w, (1, 2, 3, 0))


def depthwise_weights(model, subgraph, op) -> Optional[np.ndarray]:
    """DEPTHWISE_CONV_2D's constant filter [1, kh, kw, in_c * mult]: the same bytes as Keras's
    [kh, kw, in_c, mult] kernel."""
    inputs = flatbuffer.op_inputs(op)
    w = _constant_float(model, subgraph, inputs[1]) if len(inputs) > 1 else None
    return None if w is None or w.ndim != 4 else w


def gather_weights(model, subgraph, op) -> Optional[np.ndarray]:
    """GATHER's constant params (an embedding table [vocab, dim], Keras's layout)."""
    inputs = flatbuffer.op_inputs(op)
    w = _constant_float(model, subgraph, inputs[0]) if inputs else None
    return None if w is None or w.ndim != 2 else w


# ---- shared compression step -------------------------------------------------------------------------------

def _check_float_io(subgraph, op, layer: str, op_name: str) -> Optional[Skipped]:
    x, out = subgraph.tensors[flatbuffer.op_inputs(op)[0]], subgraph.tensors[int(op.outputs[0])]
    if x.type != schema.TensorType.FLOAT32 or out.type != schema.TensorType.FLOAT32:
        return Skipped(layer, op_name, "activations are not float32 (a quantized model?)")
    return None


def _activation_and_bias(model, subgraph, op, layer: str, op_name: str,
                         out_c: int) -> Union[Tuple[int, int], Skipped]:
    """(fused activation, bias tensor index or -1) of a conv op, or Skipped when the delegate cannot fuse the
    activation or the bias is not a constant float32 vector of out_c values."""
    o = op.builtinOptions
    activation = int(o.fusedActivationFunction) if o is not None else 0
    if activation not in ACTIVATIONS:
        return Skipped(layer, op_name, f"fused activation {activation} not supported by the delegate")
    inputs = flatbuffer.op_inputs(op)
    index = inputs[2] if len(inputs) > 2 else -1
    if index < 0:
        return activation, -1
    bias = _constant_float(model, subgraph, index)
    if bias is None or bias.size != out_c:
        return Skipped(layer, op_name, f"bias is not a constant float32 vector of {out_c} values")
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
                    settings: RewriteSettings) -> Optional[Skipped]:
    """CONV_2D with a constant float32 filter [out_c, kh, kw, in_c] -> DcConv2D (blob in the same layout)."""
    spec = op_specs.CONV_2D
    name = spec.builtin
    inputs = flatbuffer.op_inputs(op)
    weights = _constant_float(model, subgraph, inputs[1]) if len(inputs) > 1 else None
    if weights is None or weights.ndim != 4:
        return Skipped(layer, name, "filter is not a constant float32 4-D tensor")
    skipped = _check_float_io(subgraph, op, layer, name)
    if skipped:
        return skipped
    out_c, kh, kw, in_c = (int(d) for d in weights.shape)
    if _channels(subgraph, inputs[0]) != in_c:
        return Skipped(layer, name, "input is not NHWC with the filter's channel count (grouped conv?)")
    fused = _activation_and_bias(model, subgraph, op, layer, name, out_c)
    if isinstance(fused, Skipped):
        return fused
    activation, bias_index = fused
    # DcConv2D has block loops: aligned blocks of the [out_c, kh * kw * in_c] view (Keras block pruning over
    # input channels per tap, or over output channels) are kept as blocks.
    blob = encode_weights(weights, layer, name, spec.layer_kinds[0], settings, blocks=True)
    if isinstance(blob, Skipped):
        return blob
    options = Conv2DOptions(fused_activation=activation, out_channels=out_c, kernel_h=kh, kernel_w=kw,
                            in_channels=in_c, **_window_options(op.builtinOptions))
    replace_op(model, subgraph, op, layer, spec.custom_code, blob, [inputs[0], "blob", bias_index],
                    options.pack())
    return None


def rewrite_depthwise_conv_2d(model: "schema.ModelT", subgraph: "schema.SubGraphT", op: "schema.OperatorT",
                              layer: str, settings: RewriteSettings) -> Optional[Skipped]:
    """DEPTHWISE_CONV_2D with a constant float32 filter [1, kh, kw, out_c] -> DcDepthwiseConv2D, the blob
    holding the filter transposed to [out_c, kh * kw] (one row of taps per output channel)."""
    spec = op_specs.DEPTHWISE_CONV_2D
    name = spec.builtin
    inputs = flatbuffer.op_inputs(op)
    weights = _constant_float(model, subgraph, inputs[1]) if len(inputs) > 1 else None
    if weights is None or weights.ndim != 4 or weights.shape[0] != 1:
        return Skipped(layer, name, "filter is not a constant float32 [1, kh, kw, channels] tensor")
    skipped = _check_float_io(subgraph, op, layer, name)
    if skipped:
        return skipped
    _, kh, kw, out_c = (int(d) for d in weights.shape)
    in_c = _channels(subgraph, inputs[0])
    # The multiplier comes from the shapes: newer converters leave the depthMultiplier option stale.
    if in_c is None or out_c % in_c:
        return Skipped(layer, name, f"input channels {in_c} do not divide the filter's {out_c} channels")
    fused = _activation_and_bias(model, subgraph, op, layer, name, out_c)
    if isinstance(fused, Skipped):
        return fused
    activation, bias_index = fused
    transposed = np.ascontiguousarray(weights.reshape(kh * kw, out_c).T)
    blob = encode_weights(transposed, layer, name, spec.layer_kinds[0], settings)
    if isinstance(blob, Skipped):
        return blob
    options = DepthwiseConv2DOptions(fused_activation=activation, out_channels=out_c, kernel_h=kh, kernel_w=kw,
                                     depth_multiplier=out_c // in_c, **_window_options(op.builtinOptions))
    replace_op(model, subgraph, op, layer, spec.custom_code, blob, [inputs[0], "blob", bias_index],
                    options.pack())
    return None


def rewrite_gather(model: "schema.ModelT", subgraph: "schema.SubGraphT", op: "schema.OperatorT", layer: str,
                   settings: RewriteSettings) -> Optional[Skipped]:
    """GATHER(params, indices) on axis 0 with a constant float32 [vocab, dim] table (an embedding lookup) ->
    DcGather(indices, blob): the runtime input first, as the delegate's kernel contract wants."""
    spec = op_specs.GATHER
    name = spec.builtin
    inputs = flatbuffer.op_inputs(op)
    table = gather_weights(model, subgraph, op)
    if table is None or len(inputs) != 2:
        return Skipped(layer, name, "params are not a constant float32 [vocab, dim] table")
    o = op.builtinOptions
    axis = int(o.axis) if o is not None else 0
    batch_dims = int(o.batchDims) if o is not None else 0
    if axis not in (0, -2) or batch_dims != 0:
        return Skipped(layer, name, f"gather on axis {axis} with batch_dims {batch_dims} (only axis 0 is an "
                                         "embedding lookup)")
    indices, out = subgraph.tensors[inputs[1]], subgraph.tensors[int(op.outputs[0])]
    if indices.type not in (schema.TensorType.INT32, schema.TensorType.INT64):
        return Skipped(layer, name, "indices are not int32 or int64")
    if out.type != schema.TensorType.FLOAT32:
        return Skipped(layer, name, "output is not float32")
    blob = encode_weights(table, layer, name, spec.layer_kinds[0], settings)
    if isinstance(blob, Skipped):
        return blob
    options = GatherOptions(vocab=int(table.shape[0]), dim=int(table.shape[1]))
    replace_op(model, subgraph, op, layer, spec.custom_code, blob, [inputs[1], "blob"], options.pack())
    return None


# GATHERs without a constant float table are index arithmetic (shape gathers of Tensordot), not embedding
# layers: the exporter leaves them out of the "left stock" list.
rewrite_gather.report_without_weights = False

