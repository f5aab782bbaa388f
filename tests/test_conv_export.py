"""CONV_2D, DEPTHWISE_CONV_2D and embedding GATHER exported as DcConv2D / DcDepthwiseConv2D / DcGather and
run through the dc delegate against the Keras layers: sweeps of padding / stride / dilation / depth multiplier /
fused activation, LeNet-5 and a small MobileNet-style network end to end within 1e-5, the dense fallback,
the report, and the custom options records.

To stay fast, each sweep is ONE Keras model with one branch per configuration (a single TFLite conversion);
the branches' flattened outputs are concatenated and a mismatch is reported per branch.
"""
from __future__ import annotations

import numpy as np
import pytest

from test_export_models import prune_and_share

import dc_keras
from dc_keras import delegate
from dc_keras.export import flatbuffer, inspect_tflite
from dc_keras.export.conv_rewriters import (Conv2DOptions, DepthwiseConv2DOptions, GatherOptions)

TOLERANCE = 1e-5
CONV_INPUT = (11, 10, 3)


def _compress_weights(model, sparsity=0.5, clusters=16, seed=0):
    """Prune + weight-share every conv / dense / embedding kernel in place (what strip_* leave behind) and
    give biases nonzero values so that bias handling is exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights or type(layer).__name__ not in ("Conv2D", "DepthwiseConv2D", "Dense", "Embedding"):
            continue
        weights[0] = prune_and_share(weights[0], sparsity, clusters)
        if len(weights) > 1:
            weights[1] = rng.normal(0, 0.3, weights[1].shape).astype(np.float32)
        layer.set_weights(weights)
    return model


def _run(path_or_bytes, x, mode="sparse"):
    kwargs = {"model_content": path_or_bytes} if isinstance(path_or_bytes, bytes) else {"model_path": path_or_bytes}
    interpreter = delegate.make_interpreter(mode=mode, **kwargs)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def _custom_ops(path):
    model = flatbuffer.load(path.read_bytes())
    return [flatbuffer.custom_code(model, op) or flatbuffer.builtin_code(model, op)
            for sg in model.subgraphs for op in sg.operators]


def _check_branches(got, want, branches, sizes):
    """Per-branch max relative error; fails naming every branch beyond TOLERANCE."""
    assert got.shape == want.shape
    bad, start = [], 0
    for name, size in zip(branches, sizes):
        g, w = got[:, start:start + size], want[:, start:start + size]
        err = float(np.max(np.abs(g - w)) / max(float(np.max(np.abs(w))), 1e-6))
        if err > TOLERANCE:
            bad.append(f"{name}: {err:.2e}")
        start += size
    assert not bad, "branches beyond tolerance: " + "; ".join(bad)


def _sweep_model(configs, make_layer, input_shape=CONV_INPUT):
    import keras

    inp = keras.Input(input_shape)
    outs, sizes = [], []
    for i, config in enumerate(configs):
        y = make_layer(i, config)(inp)
        sizes.append(int(np.prod(y.shape[1:])))
        outs.append(keras.layers.Flatten()(y))
    return _compress_weights(keras.Model(inp, keras.layers.Concatenate()(outs))), sizes


CONV_CONFIGS = [dict(padding=p, strides=s, activation=a, kernel_size=3)
                for p in ("same", "valid") for s in (1, 2) for a in (None, "relu", "relu6", "tanh")]
CONV_CONFIGS += [
    dict(padding="same", strides=1, dilation_rate=2, kernel_size=3),   # converter: SPACE_TO_BATCH + conv
    dict(padding="valid", strides=1, dilation_rate=(2, 1), kernel_size=3, activation="relu"),
    dict(padding="same", strides=(2, 1), kernel_size=(2, 3), activation="relu6"),
    dict(padding="valid", strides=3, kernel_size=(5, 4)),
    dict(padding="same", strides=1, kernel_size=1, use_bias=False),
    dict(padding="same", strides=2, kernel_size=1, activation="relu"),
]

DW_CONFIGS = [dict(padding=p, strides=s, depth_multiplier=m, activation=a, kernel_size=3)
              for p in ("same", "valid") for s in (1, 2) for m in (1, 2) for a in (None, "relu6")]
DW_CONFIGS += [
    dict(padding="same", strides=1, dilation_rate=2, kernel_size=3),
    dict(padding="valid", strides=2, kernel_size=(3, 2), depth_multiplier=3, activation="relu"),  # TF: equal strides only
    dict(padding="same", strides=1, kernel_size=5, use_bias=False, activation="tanh"),
]


@pytest.fixture(scope="module")
def conv_sweep(tmp_path_factory):
    import keras

    model, sizes = _sweep_model(
        CONV_CONFIGS, lambda i, c: keras.layers.Conv2D(filters=4 + i % 3, name=f"conv_{i}", **c))
    path = tmp_path_factory.mktemp("conv") / "conv_sweep.tflite"
    # float32 biases: these sweeps check the kernels at float32 accuracy (float16 biases: test_bias_dtype.py).
    report = dc_keras.export_tflite(model, path, min_rate=0.0, bias_dtype="float32")
    return model, sizes, path, report


@pytest.fixture(scope="module")
def dw_sweep(tmp_path_factory):
    import keras

    model, sizes = _sweep_model(DW_CONFIGS, lambda i, c: keras.layers.DepthwiseConv2D(name=f"dw_{i}", **c))
    path = tmp_path_factory.mktemp("dw") / "dw_sweep.tflite"
    report = dc_keras.export_tflite(model, path, min_rate=0.0, bias_dtype="float32")
    return model, sizes, path, report


def test_every_conv_becomes_dc_op(conv_sweep):
    _, _, path, report = conv_sweep
    ops = _custom_ops(path)
    assert ops.count("DcConv2D") == len(CONV_CONFIGS)
    assert 3 not in ops  # CONV_2D
    assert sorted(l.name for l in report.layers) == sorted(f"conv_{i}" for i in range(len(CONV_CONFIGS)))
    assert all(l.op == "DcConv2D" for l in report.layers)


@pytest.mark.parametrize("batch", [1, 3])
def test_conv_sweep_matches_keras(conv_sweep, batch):
    model, sizes, path, _ = conv_sweep
    x = np.random.default_rng(batch).normal(size=(batch, *CONV_INPUT)).astype(np.float32)
    names = [str(c) for c in CONV_CONFIGS]
    _check_branches(_run(str(path), x), np.asarray(model(x)), names, sizes)


def test_every_depthwise_becomes_dc_op(dw_sweep):
    _, _, path, report = dw_sweep
    ops = _custom_ops(path)
    assert ops.count("DcDepthwiseConv2D") == len(DW_CONFIGS)
    assert 4 not in ops  # DEPTHWISE_CONV_2D
    layers = {l.name: l for l in report.layers}
    assert sorted(layers) == sorted(f"dw_{i}" for i in range(len(DW_CONFIGS)))
    # Stored transposed: one row of kh * kw taps per output channel.
    assert layers["dw_2"].shape == (3 * 2, 9)  # DW_CONFIGS[2]: depth_multiplier 2 on 3 channels, 3x3


@pytest.mark.parametrize("batch", [1, 2])
def test_depthwise_sweep_matches_keras(dw_sweep, batch):
    model, sizes, path, _ = dw_sweep
    x = np.random.default_rng(10 + batch).normal(size=(batch, *CONV_INPUT)).astype(np.float32)
    _check_branches(_run(str(path), x), np.asarray(model(x)), [str(c) for c in DW_CONFIGS], sizes)


def test_dense_mode_runs_the_same_convolutions(conv_sweep, dw_sweep):
    for model, sizes, path, _ in (conv_sweep, dw_sweep):
        x = np.random.default_rng(5).normal(size=(2, *CONV_INPUT)).astype(np.float32)
        _check_branches(_run(str(path), x, mode="dense"), np.asarray(model(x)), [str(i) for i in sizes], sizes)


def test_embedding_gather_matches_keras(tmp_path):
    import keras

    inp = keras.Input((7,), dtype="int32")
    y = keras.layers.Embedding(300, 16, name="embed")(inp)
    model = _compress_weights(keras.Model(inp, keras.layers.Dense(4, name="head")(y)), sparsity=0.7, clusters=8)
    path = tmp_path / "embed.tflite"
    report = dc_keras.export_tflite(model, path)
    assert _custom_ops(path).count("DcGather") == 1
    assert {l.name: l.op for l in report.layers}["embed"] == "DcGather"
    assert not report.stock  # the Dense head's shape GATHERs (Tensordot) are not listed as layers
    # Keras wraps negative indices (-300..-1) before the GATHER; the delegate sees them in range.
    x = np.random.default_rng(0).integers(-300, 300, size=(5, 7)).astype(np.int32)
    x[0, :3] = [0, 299, -300]
    got = _run(str(path), x)
    want = np.asarray(model(x))
    assert float(np.max(np.abs(got - want)) / np.max(np.abs(want))) <= TOLERANCE
    assert got.shape == (5, 7, 4)
    # Without the head: DcGather copies the clustered values, so the rows are bit-exact.
    table = model.get_layer("embed").get_weights()[0]
    idx = np.where(x < 0, x + 300, x)
    inp2 = keras.Input((7,), dtype="int32")
    plain = keras.Model(inp2, model.get_layer("embed")(inp2))
    path2 = tmp_path / "embed_only.tflite"
    dc_keras.export_tflite(plain, path2)
    np.testing.assert_array_equal(_run(str(path2), x), table[idx])


def test_lenet5_end_to_end(tmp_path):
    from dc_keras import models

    model = models.lenet5()
    for name, sparsity, clusters in (("conv1", 0.34, 16), ("conv2", 0.88, 32), ("ip1", 0.92, 32), ("ip2", 0.81, 32)):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        layer.set_weights([prune_and_share(kernel, sparsity, clusters), bias + 0.01])
    path = tmp_path / "lenet5.tflite"
    report = dc_keras.export_tflite(model, path, verify=True, min_rate=1.0, bias_dtype="float32")
    assert [(l.name, l.op) for l in report.layers] == [("conv1", "DcConv2D"), ("conv2", "DcConv2D"),
                                                      ("ip1", "DcFullyConnected"), ("ip2", "DcFullyConnected")]
    assert report.verification["max_rel_error"] <= TOLERANCE
    assert report.verification["batch_sizes"] == [1, 32]
    assert report.dense_tflite_bytes > 25 * report.tflite_bytes


def mobilenet_style(input_shape=(32, 32, 3), num_classes=10):
    """A small MobileNet-v1-style network (no batch norm: fold it into the convs before compressing)."""
    import keras

    def block(x, filters, stride, i):
        x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", activation="relu6", name=f"dw{i}")(x)
        return keras.layers.Conv2D(filters, 1, activation="relu6", name=f"pw{i}")(x)

    inp = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu6", name="stem")(inp)
    for i, (filters, stride) in enumerate([(32, 1), (64, 2), (64, 1), (128, 2)]):
        x = block(x, filters, stride, i)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, keras.layers.Dense(num_classes, name="logits")(x), name="mobilenet_style")


def test_mobilenet_style_end_to_end(tmp_path):
    model = _compress_weights(mobilenet_style(), sparsity=0.6, clusters=16)
    report = dc_keras.export_tflite(model, tmp_path / "mnet.tflite", verify=True, min_rate=0.0,
                                    verify_batch_sizes=(1, 4), bias_dtype="float32")
    ops = {l.name: l.op for l in report.layers}
    assert ops["stem"] == "DcConv2D" and ops["pw3"] == "DcConv2D"
    assert [ops[f"dw{i}"] for i in range(4)] == ["DcDepthwiseConv2D"] * 4
    assert ops["logits"] == "DcFullyConnected"
    assert report.verification["max_rel_error"] <= TOLERANCE


def test_unclustered_conv_stays_stock_with_reason(tmp_path):
    import keras

    inp = keras.Input((8, 8, 2))
    model = keras.Model(inp, keras.layers.Dense(3, name="fc")(keras.layers.Conv2D(32, 3, name="raw")(inp)))  # 576 distinct
    fc = model.get_layer("fc")
    fc.set_weights([prune_and_share(fc.get_weights()[0], 0.5, 4), fc.get_weights()[1]])
    report = dc_keras.export_tflite(model, tmp_path / "m.tflite", min_rate=0.0)
    stock = {s["layer"]: s for s in report.stock}
    assert stock["raw"]["op"] == "CONV_2D" and "distinct nonzero weights" in stock["raw"]["reason"]


def test_options_records_round_trip_and_reject_garbage():
    conv = Conv2DOptions(3, 0, 20, 5, 5, 1, 1, 2, 1, 1)
    assert len(conv.pack()) == 40 and Conv2DOptions.unpack(conv.pack()) == conv
    dw = DepthwiseConv2DOptions(3, 1, 12, 3, 3, 2, 2, 2, 1, 1)
    assert len(dw.pack()) == 40 and DepthwiseConv2DOptions.unpack(dw.pack()) == dw
    gather = GatherOptions(1000, 64)
    assert len(gather.pack()) == 16 and GatherOptions.unpack(gather.pack()) == gather
    with pytest.raises(ValueError, match="40 bytes"):
        Conv2DOptions.unpack(conv.pack()[:-1])
    with pytest.raises(ValueError, match="not DcConv2D options"):
        Conv2DOptions.unpack(dw.pack())
    with pytest.raises(ValueError, match="padding"):
        Conv2DOptions(0, 2, 1, 1, 1, 1, 1, 1, 1, 1).pack()
    with pytest.raises(ValueError, match="multiple"):
        DepthwiseConv2DOptions(0, 0, 7, 3, 3, 2, 1, 1, 1, 1).pack()
    with pytest.raises(ValueError, match="activation"):
        Conv2DOptions(9, 0, 1, 1, 1, 1, 1, 1, 1, 1).pack()


def test_inspect_reads_conv_file(conv_sweep):
    _, _, path, _ = conv_sweep
    report = inspect_tflite(path)
    assert sum(l.op == "DcConv2D" for l in report.layers) == len(CONV_CONFIGS)
    assert "DcConv2D" in report.format()
