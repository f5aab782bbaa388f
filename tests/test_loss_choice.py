"""The cross-entropy's from_logits choice must see the model's real output activation, also once the
output layer is wrapped for pruning or clustering, nested in a sub-model, or a separate Softmax layer."""
import warnings

import numpy as np
import pytest

import keras

import dc_keras
from dc_keras import pipeline
from dc_keras.pipeline import CompressionConfig, DeepCompression


def _softmax_dense():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="fc1"),
                             keras.layers.Dense(3, activation="softmax", name="fc2")])


def _softmax_layer_functional():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
    logits = keras.layers.Dense(3, name="fc2")(hidden)
    return keras.Model(inputs, keras.layers.Softmax(name="probs")(logits))


def _functional_output_not_last_listed():
    inputs = keras.Input((8,))
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(inputs)
    keras.layers.Dense(4, name="unused_side_branch")(inputs)  # listed after the output layer
    return keras.Model(inputs, probs)


def _nested():
    inner = _softmax_dense()
    return keras.Sequential([keras.Input((8,)), inner])


def _logits():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="fc1"),
                             keras.layers.Dense(3, name="fc2")])


@pytest.mark.parametrize("build, probability", [
    (_softmax_dense, True), (_softmax_layer_functional, True), (_functional_output_not_last_listed, True),
    (_nested, True), (_logits, False)])
def test_output_activation_seen_through_wrappers(build, probability):
    model = build()
    assert pipeline._output_is_probability(model) is probability
    pruned = dc_keras.prune_low_magnitude(model)
    assert pipeline._output_is_probability(pruned) is probability
    clustered = dc_keras.cluster_weights(build(), number_of_clusters=4)
    assert pipeline._output_is_probability(clustered) is probability


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 8)).astype(np.float32)
    y = x[:, :3].argmax(axis=1).astype(np.int64)
    return (x[:120], y[:120]), (x[120:], y[120:])


@pytest.mark.parametrize("build, from_logits", [(_softmax_dense, False), (_logits, True)])
def test_every_stage_compiles_the_matching_loss(build, from_logits):
    config = CompressionConfig(epochs=1, prune_epochs=1, prune_iterations=1, cluster_epochs=1, batch_size=40,
                               validation_fraction=0.25, sparsity={"fc1": 0.5}, bits=2)
    dc = DeepCompression(config, _data(), verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for stage in (lambda: dc.train_dense(build()), dc.prune, dc.cluster):
            model = stage()
            assert model.loss.get_config()["from_logits"] is from_logits
    mismatch = [str(w.message) for w in caught if "from_logits" in str(w.message)]
    assert not mismatch, mismatch
