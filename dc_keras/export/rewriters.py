"""Rewriters: one per TFLite builtin op that dc_keras can replace by a dc custom op with compressed weights.

A rewriter looks at one operator of a converted model and either replaces it in place (new custom op code,
a constant uint8 blob tensor instead of the float weights, its parameters in custom options) or declines
with a reason, leaving the stock op to run as before. REWRITERS is keyed by the builtin each op_specs.OpSpec
replaces; a new op kind adds its spec, its options class, its rewriter and one entry in _BY_CUSTOM_CODE.
"""
from __future__ import annotations

from typing import Dict

from tensorflow.lite.python import schema_py_generated as schema

from dc_keras.export import conv_rewriters, flatbuffer, op_specs
from dc_keras.export.options import ACTIVATIONS, FullyConnectedOptions
from dc_keras.export.rewrite_base import (BLOB_SUFFIX, BitsOption, Rewriter, RewriteResult,  # noqa: F401
                                          RewriteSettings, Skipped, encode_weights, replace_op)


def _weights_fc(model, subgraph, op):
    inputs = flatbuffer.op_inputs(op)
    if len(inputs) < 2 or inputs[1] < 0:
        return None
    tensor = subgraph.tensors[inputs[1]]
    if tensor.type != schema.TensorType.FLOAT32:
        return None
    return flatbuffer.tensor_data(model, tensor)


def rewrite_fully_connected(model: "schema.ModelT", subgraph: "schema.SubGraphT", op: "schema.OperatorT",
                            layer: str, settings: RewriteSettings) -> RewriteResult:
    """FULLY_CONNECTED with constant float32 weights [units, input size] -> DcFullyConnected."""
    spec = op_specs.FULLY_CONNECTED
    name = spec.builtin
    options = op.builtinOptions
    inputs = flatbuffer.op_inputs(op)
    weights = _weights_fc(model, subgraph, op)
    if weights is None or weights.ndim != 2:
        return Skipped(layer, name, "weights are not a constant float32 matrix")
    x, out = subgraph.tensors[inputs[0]], subgraph.tensors[int(op.outputs[0])]
    if x.type != schema.TensorType.FLOAT32 or out.type != schema.TensorType.FLOAT32:
        return Skipped(layer, name, "activations are not float32 (a quantized model?)")
    if options is not None and options.weightsFormat != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
        return Skipped(layer, name, "shuffled weights format")
    activation = options.fusedActivationFunction if options is not None else 0
    if activation not in ACTIVATIONS:
        return Skipped(layer, name, f"fused activation {activation} not supported by the delegate")
    bias_index = inputs[2] if len(inputs) > 2 else -1
    if bias_index >= 0:
        bias = flatbuffer.tensor_data(model, subgraph.tensors[bias_index])
        if bias is None or subgraph.tensors[bias_index].type != schema.TensorType.FLOAT32:
            return Skipped(layer, name, "bias is not a constant float32 vector")

    # DcFullyConnected has block loops: aligned block structure in [units, input size] is kept as blocks.
    blob = encode_weights(weights, layer, name, spec.layer_kinds[0], settings, blocks=True)
    if isinstance(blob, Skipped):
        return blob

    fc_options = FullyConnectedOptions(
        fused_activation=int(activation), keep_num_dims=bool(options.keepNumDims) if options is not None else False,
        units=int(weights.shape[0]), input_size=int(weights.shape[1]))
    replace_op(model, subgraph, op, layer, spec.custom_code, blob, [inputs[0], "blob", bias_index],
               fc_options.pack())
    return None


_BY_CUSTOM_CODE = {
    op_specs.FULLY_CONNECTED.custom_code: (rewrite_fully_connected, _weights_fc),
    op_specs.CONV_2D.custom_code: (conv_rewriters.rewrite_conv_2d, conv_rewriters.conv_weights),
    op_specs.DEPTHWISE_CONV_2D.custom_code: (conv_rewriters.rewrite_depthwise_conv_2d,
                                             conv_rewriters.depthwise_weights),
    op_specs.GATHER.custom_code: (conv_rewriters.rewrite_gather, conv_rewriters.gather_weights),
}

REWRITERS: Dict[int, tuple] = {getattr(schema.BuiltinOperator, spec.builtin): _BY_CUSTOM_CODE[spec.custom_code]
                               for spec in op_specs.SPECS}
"""TFLite builtin op -> (rewriter, function giving the op's constant float weights in the Keras layer's layout,
for naming layers)."""
