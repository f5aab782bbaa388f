"""The reference networks in dc_keras.models (reused by the examples and the pipeline)."""
import keras
import numpy as np

import dc_keras
from dc_keras.callbacks import UpdatePruningStep
from dc_keras.models import lenet5, lenet_300_100


def _kernels(model):
    return {layer.name: tuple(layer.kernel.shape) for layer in model.layers if hasattr(layer, "kernel")}


def test_lenet_300_100_shapes():
    model = lenet_300_100()
    assert _kernels(model) == {"ip1": (784, 300), "ip2": (300, 100), "ip3": (100, 10)}
    assert model.count_params() == 266_200 + 410
    assert model(np.zeros((2, 28, 28), "float32")).shape == (2, 10)


def test_lenet5_caffe_variant_shapes():
    model = lenet5()
    assert _kernels(model) == {"conv1": (5, 5, 1, 20), "conv2": (5, 5, 20, 50), "ip1": (800, 500),
                               "ip2": (500, 10)}
    assert model.count_params() == 430_500 + 580
    assert model(np.zeros((2, 28, 28), "float32")).shape == (2, 10)
    assert lenet5(input_shape=(28, 28, 1))(np.zeros((1, 28, 28, 1), "float32")).shape == (1, 10)


def test_lenet5_prunes_all_four_layers():
    pruned = dc_keras.prune_low_magnitude(lenet5(), dc_keras.ConstantSparsity(0.9, 0, frequency=1))
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    pruned.fit(rng.random((8, 28, 28)).astype("float32"), rng.integers(0, 10, 8), epochs=1, verbose=0,
               callbacks=[UpdatePruningStep()])
    report = dc_keras.sparsity_report(pruned, print_fn=None)
    assert [row.layer for row in report] == ["conv1", "conv2", "ip1", "ip2"]
    assert [row.kind for row in report] == ["conv", "conv", "fc", "fc"]
    for row in report:
        assert abs(row.n_weights - row.nonzeros - 0.9 * row.n_weights) <= 1
