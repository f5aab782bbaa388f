"""BatchNormalization folded into shared layers by TFLite's converter: the exporter separates the
per-channel scale again, so Conv2D / DepthwiseConv2D / Dense + BN layers end as dc ops named after their
Keras layers, and the file still computes what Keras does."""
from __future__ import annotations

import numpy as np
import pytest

import keras

import dc_keras
from dc_keras import delegate
from dc_keras.export import channel_scale, flatbuffer

from test_export_models import run_tflite


def _bn_net(activation="relu6"):
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.Activation(activation, name="conv_act")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(name="dw_relu")(x)
    x = keras.layers.Conv2D(24, 1, name="project")(x)
    x = keras.layers.BatchNormalization(name="project_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(32, name="fc")(x)
    x = keras.layers.BatchNormalization(name="fc_bn")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x))


def _trained_like(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[-1]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.2, n),
                               rng.uniform(0.3, 2.0, n)])
    return model


def _shared(model, sparsity=0.5, clusters=8, seed=1):
    """Stands in for prune -> cluster -> strip: every kernel gets zeros and `clusters` distinct values."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if hasattr(layer, "kernel") and not isinstance(layer, keras.layers.BatchNormalization):
            weights = layer.get_weights()
            kernel = weights[0]
            centroids = rng.normal(0, 0.3, clusters).astype(np.float32)
            shared = centroids[rng.integers(0, clusters, kernel.shape)]
            shared[rng.random(kernel.shape) < sparsity] = 0
            layer.set_weights([shared.astype(np.float32), *weights[1:]])
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _shared(_trained_like(_bn_net()))
    directory = tmp_path_factory.mktemp("bn")
    path = directory / "bn.tflite"
    # float32 biases: test_outputs_match_keras checks the separation at float32 accuracy. The float16 default,
    # whose verification rounds the divided biases b' / s alike, is exported and verified by the tanh test below.
    report = dc_keras.export_tflite(model, path, verify=True, min_rate=0.0, bias_dtype="float32")
    return model, path, report


def test_every_folded_layer_is_a_dc_op_named_after_its_keras_layer(exported):
    _, path, report = exported
    assert sorted(layer.name for layer in report.layers) == ["conv", "dw", "fc", "logits", "project"]
    assert report.stock == []
    model = flatbuffer.load(path.read_bytes())
    stock = [flatbuffer.builtin_code(model, op) for op in model.subgraphs[0].operators]
    from tensorflow.lite.python import schema_py_generated as schema

    assert not {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D,
                schema.BuiltinOperator.FULLY_CONNECTED} & set(stock)
    assert stock.count(schema.BuiltinOperator.MUL) == 4  # one per BatchNormalization


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_outputs_match_keras(exported, mode):
    model, path, _ = exported
    x = np.random.default_rng(5).normal(size=(4, 12, 12, 3)).astype(np.float32)
    got = run_tflite(delegate.make_interpreter(path, mode=mode), x)
    want = np.asarray(model(x, training=False))
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_activation_a_mul_cannot_carry_leaves_the_layer_stock_and_correct(tmp_path):
    model = _shared(_trained_like(_bn_net(activation="tanh")))
    report = dc_keras.export_tflite(model, tmp_path / "tanh.tflite", verify=True, min_rate=0.0)
    names = {layer.name for layer in report.layers}
    assert {"dw", "project", "fc"} <= names  # the other folded layers still separate


def test_channel_scale_recovers_the_factor_and_rejects_other_tensors():
    rng = np.random.default_rng(3)
    kernel = rng.choice(np.array([0, 0, -0.5, 0.25, 1.0], np.float32), size=(6, 3, 3, 4))
    scale = rng.uniform(-2, 2, 6).astype(np.float32)
    folded = (kernel * scale[:, None, None, None]).astype(np.float32)
    np.testing.assert_allclose(channel_scale.channel_scale(folded, kernel, 0), scale, rtol=1e-6)
    np.testing.assert_allclose(channel_scale.channel_scale(np.moveaxis(folded, 0, 3), np.moveaxis(kernel, 0, 3), 3),
                               scale, rtol=1e-6)
    other = folded.copy()
    other[0, 0, 0, np.flatnonzero(kernel[0, 0, 0])[:1]] *= 1.01  # one weight off its channel's factor
    assert channel_scale.channel_scale(other, kernel, 0) is None
    moved_zero = folded.copy()
    moved_zero[kernel == 0] = 0.1
    assert channel_scale.channel_scale(moved_zero, kernel, 0) is None
    assert channel_scale.channel_scale(folded[:3], kernel, 0) is None


def test_unscaled_layers_are_left_alone(tmp_path):
    model = _shared(keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, name="a"),
                                      keras.layers.Dense(4, name="b")]))
    dense = tmp_path / "dense.tflite"
    dc_keras.export_tflite(model, tmp_path / "m.tflite", dense_path=dense, min_rate=0.0)
    tflite = flatbuffer.load(dense.read_bytes())
    kernels = channel_scale.tflite_layout_kernels(model.layers)
    assert channel_scale.separate_channel_scales(tflite, kernels) == []


def test_headline_counts_layers_left_stock_at_float32(tmp_path):
    from dc_keras.pipeline.report import all_weights_summary, format_report

    model = _shared(_trained_like(_bn_net()))
    # the depthwise layer's blob is less than 5x smaller than its floats: it stays stock, counted at float32
    report = dc_keras.export_tflite(model, tmp_path / "m.tflite", min_rate=5.0)
    stock = {s["layer"]: s for s in report.stock}
    assert stock and all(s["weights"] > 0 for s in stock.values())
    summary = all_weights_summary(report)
    compressed = report.totals()
    assert summary["weights"] == compressed["weights"] + sum(s["weights"] for s in stock.values())
    assert summary["rate_pqh"] > compressed["rate_pqh"]
    expected = (sum(l.blob_bytes for l in report.layers) + 4 * sum(s["weights"] for s in stock.values())) \
        / (4 * summary["weights"])
    assert summary["rate_pqh"] == pytest.approx(expected)
    text = format_report({"table2": [], "stock_layers": report.stock, "weights_all": summary,
                          "files": {"dense.tflite": 1, "compressed.tflite": 1, "ratio": 1.0},
                          "accuracy": {}, "tflite_accuracy": {}, "seconds": {}})
    assert f"all {summary['weights']} weights of weighted layers compressed" in text
    assert "weights): " in text  # stock rows carry their weight count
    # dc-inspect reads the same from the file
    assert dc_keras.export.inspect_tflite(tmp_path / "m.tflite").totals()["stock_weights"] == \
        compressed["stock_weights"]


def test_declined_separation_leaves_the_op_untouched(tmp_path):
    from tensorflow.lite.python import schema_py_generated as schema

    model = _shared(_trained_like(_bn_net()))
    dense = tmp_path / "dense.tflite"
    dc_keras.export_tflite(model, tmp_path / "m.tflite", dense_path=dense, min_rate=0.0)
    tflite = flatbuffer.load(dense.read_bytes())
    subgraph = tflite.subgraphs[0]
    conv = next(op for op in subgraph.operators
                if flatbuffer.builtin_code(tflite, op) == schema.BuiltinOperator.CONV_2D)
    subgraph.tensors[int(conv.inputs[2])].buffer = 0  # a bias that is not a constant: cannot be divided by s
    weights_buffer = subgraph.tensors[int(conv.inputs[1])].buffer
    separated = channel_scale.separate_channel_scales(tflite, channel_scale.tflite_layout_kernels(model.layers))
    assert "conv" not in separated and "project" in separated
    assert subgraph.tensors[int(conv.inputs[1])].buffer == weights_buffer
