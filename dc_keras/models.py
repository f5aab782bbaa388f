"""The paper's reference networks, for examples, benchmarks and the full pipeline.

Both take ``(28, 28)`` images scaled to [0, 1] (what ``dc_keras.datasets.fashion_mnist()`` gives after
``x / 255``) and output logits (no softmax: train with ``from_logits=True``). Layer names follow the paper's
tables (ip1/ip2/ip3, conv1/conv2) so that per-layer reports line up with Tables 2 and 3.
"""
from __future__ import annotations

from typing import Sequence

import keras

__all__ = ["lenet_300_100", "lenet5"]


def lenet_300_100(input_shape: Sequence[int] = (28, 28), num_classes: int = 10,
                  name: str = "lenet_300_100") -> keras.Sequential:
    """LeNet-300-100: flatten, FC 300 relu (ip1), FC 100 relu (ip2), FC ``num_classes`` (ip3, logits).

    784-300-100-10 has 266,200 weights and 410 biases (the paper's 267K parameters).
    """
    return keras.Sequential([
        keras.Input(shape=tuple(input_shape), name="image"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(300, activation="relu", name="ip1"),
        keras.layers.Dense(100, activation="relu", name="ip2"),
        keras.layers.Dense(num_classes, name="ip3"),
    ], name=name)


def lenet5(input_shape: Sequence[int] = (28, 28), num_classes: int = 10, name: str = "lenet5") -> keras.Sequential:
    """LeNet-5, Caffe variant (the paper's): conv 20@5x5, maxpool 2, conv 50@5x5, maxpool 2, FC 500 relu, FC 10.

    Valid padding, as in Caffe's lenet.prototxt: 430,500 weights + 580 biases (the paper's 431K).
    ``(28, 28)`` inputs get a channel axis added by a Reshape layer; ``(28, 28, 1)`` inputs are used as they are.
    """
    input_shape = tuple(input_shape)
    layers = [keras.Input(shape=input_shape, name="image")]
    if len(input_shape) == 2:
        layers.append(keras.layers.Reshape(input_shape + (1,), name="add_channel"))
    layers += [
        keras.layers.Conv2D(20, 5, name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(50, 5, name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(500, activation="relu", name="ip1"),
        keras.layers.Dense(num_classes, name="ip2"),
    ]
    return keras.Sequential(layers, name=name)
