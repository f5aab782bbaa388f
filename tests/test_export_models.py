"""Model builders shared by the export and delegate tests (no tests here).

Models are LeNet-300-100-shaped (784-300-100-10), trained for a few steps on synthetic data, then pruned
and weight-shared so that they look like what strip_pruning + strip_clustering return: plain layers whose
kernels have few distinct values.
"""
from __future__ import annotations

import numpy as np

LENET = (784, 300, 100, 10)


def synthetic_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, LENET[0]), dtype=np.float32)
    y = rng.integers(0, LENET[-1], size=n)
    return x, y


def prune_and_share(kernel: np.ndarray, sparsity: float, clusters: int) -> np.ndarray:
    """Magnitude pruning then 1-D weight sharing: centroids at evenly spaced quantiles of the surviving
    weights (so every one is used), each nonzero snapped to its nearest: `clusters` distinct nonzero values."""
    kernel = np.asarray(kernel, dtype=np.float32).copy()
    threshold = np.quantile(np.abs(kernel), sparsity)
    kernel[np.abs(kernel) <= threshold] = 0.0
    nonzero = kernel[kernel != 0]
    centroids = np.unique(np.quantile(nonzero, np.linspace(0, 1, clusters)).astype(np.float32))
    centroids = centroids[centroids != 0]
    idx = np.abs(nonzero[:, None] - centroids[None, :]).argmin(axis=1)
    kernel[kernel != 0] = centroids[idx]
    return kernel


def keras_lenet(sparsity=0.92, clusters=32, activations=("relu", "relu", None), train=True):
    """A stripped-looking Keras 3 LeNet-300-100: trained briefly, then pruned + shared in place."""
    import keras

    model = keras.Sequential([keras.Input((LENET[0],))] + [
        keras.layers.Dense(units, activation=act, name=f"ip{i + 1}")
        for i, (units, act) in enumerate(zip(LENET[1:], activations))])
    if train:
        x, y = synthetic_data()
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        layer.set_weights([prune_and_share(kernel, sparsity, clusters), bias])
    return model


def tfmot_lenet(sparsity=0.9, clusters=16):
    """A tf_keras LeNet-300-100 pruned and clustered with tfmot and stripped with tfmot's strip functions."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    x, y = synthetic_data()
    model = tf_keras.Sequential([tf_keras.Input((LENET[0],)),
                                 tf_keras.layers.Dense(300, activation="relu", name="ip1"),
                                 tf_keras.layers.Dense(100, activation="relu", name="ip2"),
                                 tf_keras.layers.Dense(10, name="ip3")])
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=1))
    pruned.compile("adam", loss)
    pruned.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    clustered = tfmot.clustering.keras.cluster_weights(
        stripped, number_of_clusters=clusters,
        cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.LINEAR, preserve_sparsity=True)
    clustered.compile("adam", loss)
    clustered.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return tfmot.clustering.keras.strip_clustering(clustered), pruned


def run_tflite(interpreter, x: np.ndarray) -> np.ndarray:
    """Output of a one-input one-output interpreter for input x (resizing to x's batch)."""
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def max_rel_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))
