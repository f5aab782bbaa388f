"""Separates the per-output-channel scale that TFLite's converter folds into weights back out of them.

The converter folds a BatchNormalization that follows a Conv2D / DepthwiseConv2D / Dense into the layer: it
stores F = s * W (s = gamma / sqrt(variance + epsilon), one factor per output channel) and the shifted bias
b'. W has the few distinct values weight sharing gave it; F has up to k * channels, so a folded layer no
longer fits a codebook. This pass finds, for such an op, the Keras layer whose kernel W (in TFLite's layout)
satisfies F = s * W per output channel with the same zeros, puts W back as the op's weights and b' / s as its
bias, and applies s once per output by a stock MUL after the op, which also takes over the fused activation:

    act(F x + b')  ==  act(s * (W x + b' / s))        CONV_2D -> [CONV_2D(W, b'/s)] -> MUL(s, act)

The rewriters then store W compressed like any other shared layer, and the MUL costs one multiply per
output value. Why not apply s inside the dc kernels: this keeps every kernel, the blob format and both
front ends unchanged; a fused scale is an optimisation the kernels can take later without a format change.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from dc_keras.export import flatbuffer

# builtin -> (weights input index, output-channel axis of the weights in TFLite's layout)
_SCALED_OPS = {
    schema.BuiltinOperator.CONV_2D: (1, 0),
    schema.BuiltinOperator.DEPTHWISE_CONV_2D: (1, 3),
    schema.BuiltinOperator.FULLY_CONNECTED: (1, 0),
}

# Fused activations a MUL can carry (TFLite's MUL kernel applies these after the product).
_MUL_ACTIVATIONS = {schema.ActivationFunctionType.NONE, schema.ActivationFunctionType.RELU,
                    schema.ActivationFunctionType.RELU_N1_TO_1, schema.ActivationFunctionType.RELU6}

MAX_CODEBOOK = 256
"""A kernel with more distinct nonzero values is not a shared layer: nothing to separate."""

RELATIVE_TOLERANCE = 1e-5
"""How far F may be from s * W (relative to the channel's largest |F|): float32 folding rounds each product
once (~6e-8), so anything beyond this is a different layer, not a folded one."""


def tflite_layout_kernels(layers: Iterable) -> Dict[str, np.ndarray]:
    """{Keras layer name: kernel as TFLite stores it} for Dense ([out, in]), Conv2D (OHWI), Conv1D
    ([out, 1, k, in]), DepthwiseConv2D ([1, kh, kw, channels * multiplier]) and Embedding ([vocab, dim])."""
    import keras

    kernels = {}
    for layer in layers:
        variable = getattr(layer, "embeddings", None) if isinstance(layer, keras.layers.Embedding) else \
            getattr(layer, "kernel", None)
        if variable is None or not hasattr(variable, "numpy"):
            continue
        value = np.asarray(variable.numpy(), dtype=np.float32)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernels[layer.name] = value.reshape(1, *value.shape[:2], -1)
        elif isinstance(layer, keras.layers.Conv2D) and value.ndim == 4:
            kernels[layer.name] = value.transpose(3, 0, 1, 2)
        elif isinstance(layer, keras.layers.Conv1D) and value.ndim == 3:
            kernels[layer.name] = value.transpose(2, 0, 1)[:, None]
        elif isinstance(layer, keras.layers.Dense) and value.ndim == 2:
            kernels[layer.name] = value.T
        elif isinstance(layer, keras.layers.Embedding):
            kernels[layer.name] = value
    return kernels


def channel_scale(folded: np.ndarray, kernel: np.ndarray, axis: int) -> Optional[np.ndarray]:
    """s with folded == s * kernel along output-channel `axis` (same zeros), or None when there is none.

    Channels that are zero in both get s = 1.
    """
    if folded.shape != kernel.shape or not np.array_equal(folded == 0, kernel == 0):
        return None
    f = np.moveaxis(folded, axis, 0).reshape(folded.shape[axis], -1).astype(np.float64)
    w = np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1).astype(np.float64)
    scale = np.ones(f.shape[0])
    for channel in range(f.shape[0]):
        nonzero = w[channel] != 0
        if not nonzero.any():
            continue
        ratios = f[channel, nonzero] / w[channel, nonzero]
        scale[channel] = np.median(ratios)
        if scale[channel] == 0 or not np.isfinite(scale[channel]):
            return None
        error = np.max(np.abs(f[channel] - scale[channel] * w[channel]))
        if error > RELATIVE_TOLERANCE * np.max(np.abs(f[channel])):
            return None
    return scale.astype(np.float32)


def _distinct_nonzeros(array: np.ndarray) -> int:
    return int(np.unique(array[array != 0]).size)


def _match(folded: np.ndarray, axis: int, kernels: Dict[str, np.ndarray], taken: set) -> Optional[Tuple[str, np.ndarray]]:
    """The unclaimed Keras kernel that `folded` is a per-channel rescaling of, with the scale."""
    for name, kernel in kernels.items():
        if name in taken or kernel.shape != folded.shape or _distinct_nonzeros(kernel) > MAX_CODEBOOK:
            continue
        scale = channel_scale(folded, kernel, axis)
        if scale is not None:
            return name, scale
    return None


def _builtin_opcode_index(model: "schema.ModelT", builtin: int) -> int:
    for index, code in enumerate(model.operatorCodes):
        # Files written by old converters only fill deprecatedBuiltinCode.
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = builtin
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _name(value) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else (value or "")


def _scale_after(model, subgraph, position: int, op, scale: np.ndarray, activation: int) -> None:
    """Routes `op`'s output through a new MUL by `scale` (per last-axis channel) carrying `activation`."""
    output_index = int(op.outputs[0])
    output = subgraph.tensors[output_index]
    unscaled = schema.TensorT()
    unscaled.name = _name(output.name) + "/unscaled"
    unscaled.shape = None if output.shape is None else np.array(output.shape, dtype=np.int32)
    unscaled.shapeSignature = None if output.shapeSignature is None else np.array(output.shapeSignature, np.int32)
    unscaled.type = output.type
    unscaled.buffer = 0
    subgraph.tensors.append(unscaled)
    unscaled_index = len(subgraph.tensors) - 1
    scale_index = flatbuffer.add_tensor(model, subgraph, _name(output.name) + "/channel_scale",
                                        [scale.size], schema.TensorType.FLOAT32, scale.astype("<f4").tobytes())
    op.outputs = np.array([unscaled_index], dtype=np.int32)
    mul = schema.OperatorT()
    mul.opcodeIndex = _builtin_opcode_index(model, schema.BuiltinOperator.MUL)
    mul.inputs = np.array([unscaled_index, scale_index], dtype=np.int32)
    mul.outputs = np.array([output_index], dtype=np.int32)
    mul.builtinOptionsType = schema.BuiltinOptions.MulOptions
    mul.builtinOptions = schema.MulOptionsT()
    mul.builtinOptions.fusedActivationFunction = activation
    subgraph.operators.insert(position + 1, mul)


def _separate(model, subgraph, position: int, op, weights_input: int, kernel: np.ndarray, scale) -> bool:
    """Rewrites one folded op in place; False, with nothing changed, when its activation cannot move to a MUL
    or its bias is not a constant per output channel."""
    options = op.builtinOptions
    activation = int(getattr(options, "fusedActivationFunction", 0) or 0)
    if activation not in _MUL_ACTIVATIONS:
        return False
    bias_tensor = bias = None
    if len(op.inputs) > 2 and int(op.inputs[2]) >= 0:
        bias_tensor = subgraph.tensors[int(op.inputs[2])]
        bias = flatbuffer.tensor_data(model, bias_tensor)
        if bias is None or bias.shape != scale.shape:
            return False
    weights = subgraph.tensors[int(op.inputs[weights_input])]
    weights.buffer = flatbuffer.add_buffer(model, np.ascontiguousarray(kernel, dtype="<f4").tobytes())
    if bias_tensor is not None:
        bias_tensor.buffer = flatbuffer.add_buffer(model, (bias / scale).astype("<f4").tobytes())
    if options is not None:
        options.fusedActivationFunction = schema.ActivationFunctionType.NONE
    _scale_after(model, subgraph, position, op, scale, activation)
    return True


def separate_channel_scales(model: "schema.ModelT", kernels: Dict[str, np.ndarray]) -> List[str]:
    """Undoes the converter's scale folding wherever it broke a shared layer's codebook (module docstring).

    Args:
      model: the converted .tflite as an object tree (changed in place).
      kernels: tflite_layout_kernels() of the Keras model that was converted.

    Returns:
      The Keras names of the layers whose ops were rewritten, in graph order.
    """
    separated, taken = [], set()
    for subgraph in model.subgraphs:
        position = 0
        while position < len(subgraph.operators or []):
            op = subgraph.operators[position]
            entry = _SCALED_OPS.get(flatbuffer.builtin_code(model, op))
            if entry is not None:
                weights_input, axis = entry
                folded = flatbuffer.tensor_data(model, subgraph.tensors[int(op.inputs[weights_input])])
                if folded is not None and folded.dtype == np.float32:
                    match = _match(folded, axis, kernels, taken)
                    if match is not None and not np.array_equal(folded, kernels[match[0]]):
                        name, scale = match
                        if _separate(model, subgraph, position, op, weights_input, kernels[name], scale):
                            separated.append(name)
                            taken.add(name)
                            position += 1  # past the MUL just inserted
            position += 1
    return separated
