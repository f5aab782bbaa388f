"""Reference networks, for examples, benchmarks and the full pipeline: the paper's LeNets, and a small
CIFAR-style ResNet (Conv-BN-ReLU blocks, residual Add, global pooling) as a network users really ship.

The LeNets take ``(28, 28)`` images scaled to [0, 1] (what ``dc_keras.datasets.fashion_mnist()`` gives after
``x / 255``) and output logits (no softmax: train with ``from_logits=True``). Layer names follow the paper's
tables (ip1/ip2/ip3, conv1/conv2) so that per-layer reports line up with Tables 2 and 3.
"""
from __future__ import annotations

from typing import Sequence

import keras

__all__ = ["lenet_300_100", "lenet5", "resnet"]


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


def _resnet_block(x, filters: int, stride: int, name: str):
    """Two 3x3 Conv-BN layers with a residual Add (a 1x1 Conv-BN projection when the shape changes)."""
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(shortcut)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet(depth: int = 20, input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10,
           width: int = 16, name: str = "resnet") -> keras.Model:
    """He et al.'s CIFAR ResNet (depth 6n + 2: ResNet-8, -14, -20, ...): a 3x3 Conv-BN-ReLU stem of `width`
    filters, three stages of n residual blocks with width, 2x and 4x filters (stride 2 between stages),
    global average pooling and a Dense of `num_classes` logits (name "fc").

    ResNet-20 at width 16 has 0.27M weights. Every Conv2D is followed by BatchNormalization, which TFLite's
    converter folds into the convolution's weights.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}")
    blocks = (depth - 2) // 6
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage in range(3):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _resnet_block(x, width * 2 ** stage, stride, name=f"s{stage + 1}b{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)
