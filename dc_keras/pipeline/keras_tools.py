"""Keras and TFLite helpers of the pipeline: loss choice, compressible layers, copies, stock conversion and
.tflite accuracy."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from dc_keras import interrupts
from dc_keras.atomic import scratch_tempdir


def _output_layer(model):
    """The layer that produces `model`'s (first) output, unwrapped from dc_keras's wrappers and nested models.

    Why the output tensor's history rather than `model.layers[-1]`: in a functional model the last listed
    layer need not produce the output, and pruning/clustering wrappers hide the inner layer's activation.
    """
    import keras

    layer = model
    for _ in range(64):  # nesting depth is small; the bound only guards against a cyclic structure
        if isinstance(layer, keras.layers.Wrapper):
            layer = layer.layer
            continue
        if not isinstance(layer, keras.Model):
            return layer
        producer = None
        outputs = getattr(layer, "outputs", None) or []
        history = getattr(outputs[0], "_keras_history", None) if outputs else None
        if history is not None:
            producer = history[0]
        if producer is None or producer is layer:
            producer = layer.layers[-1] if layer.layers else None
        if producer is None:
            return None
        layer = producer
    return layer


def _output_is_probability(model) -> bool:
    """True when the model ends in a softmax (also inside a pruning/clustering wrapper or a nested model),
    so the loss must not apply one again."""
    import keras

    last = _output_layer(model)
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def compile_for_classification(model, learning_rate: float, labels_one_hot: bool):
    """Compile with Adam and the cross-entropy matching the model's output and the labels' form."""
    import keras

    from_logits = not _output_is_probability(model)
    loss = (keras.losses.CategoricalCrossentropy(from_logits=from_logits) if labels_one_hot
            else keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    return model


def compressible_layers(model) -> List:
    """The layers of `model` dc_keras compresses (descending into nested models), in order."""
    from dc_keras import layer_registry

    return [layer for layer in layer_registry.walk(model) if layer.weights and layer_registry.is_supported(layer)]


def kernel_arrays(model) -> Dict[str, np.ndarray]:
    """layer name -> first compressible weight (the kernel) as NumPy, for statistics and plots."""
    from dc_keras import layer_registry

    return {layer.name: np.asarray(layer_registry.compressible_weights(layer)[0][1].numpy())
            for layer in compressible_layers(model)}


def copy_model(model):
    """A separate Keras model with the same architecture and weights (the stages mutate layers in place)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def tflite_from_keras(model, scratch_dir: Optional[str] = None, int8: bool = False) -> bytes:
    """Stock TFLite conversion of a Keras model: the dense reference files.

    The same converter route as dc_keras.export_tflite, so that dense and compressed files differ only by
    what compression did. int8=True gives dynamic-range quantization (int8 weights, float activations:
    Optimize.DEFAULT without a representative dataset), the strongest stock baseline for speed and size.
    The converter's temporary SavedModel goes under `scratch_dir` when given.
    """
    import tensorflow as tf

    from dc_keras import _tf_notices

    with _tf_notices.filtered(conversion=True), scratch_tempdir(scratch_dir):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def tflite_accuracy(path_or_bytes, x: np.ndarray, y: np.ndarray, batch_size: int = 1000,
                    with_dc_delegate: bool = False) -> float:
    """Top-1 accuracy of a .tflite file run by ai_edge_litert, with dc_keras's delegate if asked (files with
    dc custom ops need it). Inputs are fed in the file's input dtype (token ids stay integers)."""
    kwargs = {}
    if isinstance(path_or_bytes, (bytes, bytearray)):
        kwargs["model_content"] = bytes(path_or_bytes)
    else:
        kwargs["model_path"] = str(path_or_bytes)
    if with_dc_delegate:
        from dc_keras import delegate

        interpreter = delegate.make_interpreter(**kwargs)
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(**kwargs)
    input_detail = interpreter.get_input_details()[0]
    input_index, input_dtype = input_detail["index"], np.dtype(input_detail["dtype"])
    output_index = interpreter.get_output_details()[0]["index"]
    labels = y.argmax(axis=-1) if y.ndim == 2 else y
    correct, shape = 0, None
    for start in range(0, len(x), batch_size):
        batch = np.asarray(x[start:start + batch_size]).astype(input_dtype, copy=False)
        if batch.shape != shape:
            interpreter.resize_tensor_input(input_index, batch.shape)
            interpreter.allocate_tensors()
            shape = batch.shape
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        predictions = interpreter.get_tensor(output_index)
        correct += int(np.sum(predictions.argmax(axis=-1) == labels[start:start + batch_size]))
    return correct / len(x)


def interrupt_check_callback():
    """A Keras callback that stops training at the next batch once SIGINT/SIGTERM was recorded."""
    import keras

    class InterruptCheck(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            interrupts.check()

    return InterruptCheck()


