"""export_tflite: compressed .tflite files from stripped Keras 3 and tfmot/tf_keras models, run through the
dc delegate, with the report, dc-inspect and the documented errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_export_models import LENET, keras_lenet, max_rel_error, run_tflite, tfmot_lenet

import dc_keras
from dc_keras import delegate
from dc_keras.export import (ExportError, ExportVerificationError, NoCompressibleLayerError, flatbuffer,
                             inspect_tflite)

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def keras_model():
    return keras_lenet()


@pytest.fixture(scope="module")
def exported(keras_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    path, dense_path = out / "lenet.tflite", out / "lenet_dense.tflite"
    report = dc_keras.export_tflite(keras_model, path, verify=True, dense_path=dense_path)
    return path, dense_path, report


def _ops(path):
    model = flatbuffer.load(Path(path).read_bytes())
    return model, [(flatbuffer.builtin_code(model, op), flatbuffer.custom_code(model, op))
                   for sg in model.subgraphs for op in sg.operators]


def _inputs(batch, seed=1):
    return np.random.default_rng(seed).random((batch, LENET[0]), dtype=np.float32)


@pytest.mark.parametrize("batch", [1, 32])
def test_keras3_lenet_matches_keras_through_delegate(keras_model, exported, batch):
    path, _, _ = exported
    x = _inputs(batch)
    got = run_tflite(delegate.make_interpreter(path), x)
    want = np.asarray(keras_model(x))
    assert got.shape == (batch, 10)
    assert max_rel_error(got, want) <= TOLERANCE


def test_every_fc_becomes_dc_op_and_dense_weights_are_gone(exported):
    path, dense_path, report = exported
    model, ops = _ops(path)
    assert [c for _, c in ops if c] == ["DcFullyConnected"] * 3
    assert all(code != 9 for code, _ in ops)  # no FULLY_CONNECTED left
    # No float weight buffer survives: every buffer is a blob, a bias, or small metadata.
    biggest_float = max((len(flatbuffer.buffer_bytes(model, t.buffer)) for sg in model.subgraphs
                         for t in sg.tensors if t.type == 0), default=0)
    assert biggest_float <= 300 * 4
    size = path.stat().st_size
    assert size == report.tflite_bytes
    assert report.dense_tflite_bytes == dense_path.stat().st_size
    assert size * 15 < report.dense_tflite_bytes  # ~92% pruned, 5 bits + Huffman
    assert size < sum(l.blob_bytes for l in report.layers) + 6000  # graph, biases, metadata
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_report_has_paper_table_columns_measured_from_blobs(exported):
    _, _, report = exported
    from dc_keras import codec

    assert [l.name for l in report.layers] == ["ip1", "ip2", "ip3"]
    assert [l.weights for l in report.layers] == [784 * 300, 300 * 100, 100 * 10]
    for layer in report.layers:
        assert layer.bits == 5 and layer.index_bits == 5
        assert 0.05 < layer.weights_fraction < 0.11
        # Small layers pay for their Huffman tables; ip1 (235K weights) must beat the fixed widths.
        assert 0 < layer.weight_bits_pqh < 8 and 0 < layer.index_bits_pqh < 8
        assert 0 < layer.rate_pqh < layer.rate_pq * 1.2 < 0.2
    ip1 = report.layers[0]
    assert ip1.weight_bits_pqh <= 5.05 and ip1.index_bits_pqh < 5.5
    model = flatbuffer.load(Path(report.path).read_bytes())
    blob = next(flatbuffer.buffer_bytes(model, t.buffer) for sg in model.subgraphs for t in sg.tensors
                if flatbuffer._text(t.name) == "ip1/dc_blob")
    info = codec.parse_info(blob)
    assert ip1.blob_bytes == len(blob) == info.total_bytes
    assert ip1.nonzeros == info.num_nonzeros
    assert ip1.weight_bits_pqh == pytest.approx(8 * info.code_stream_bytes / info.num_nonzeros)
    totals = report.totals()
    assert totals["weights"] == 266200
    assert report.verification["max_rel_error"] <= TOLERANCE
    assert report.verification["batch_sizes"] == [1, 32]
    text = report.format()
    assert "ip1" in text and "rate P+Q+H" in text and "total" in text


def test_inspect_reads_the_same_report_from_the_file(exported):
    path, _, report = exported
    again = inspect_tflite(path)
    assert again.to_dict()["layers"] == report.to_dict()["layers"]
    assert again.dense_tflite_bytes == report.dense_tflite_bytes


def test_dc_inspect_cli(exported):
    path, dense_path, report = exported
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "dc_keras.cli.inspect", "--json", str(path)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [l["name"] for l in data["layers"]] == ["ip1", "ip2", "ip3"]
    assert data["tflite_bytes"] == report.tflite_bytes
    table = subprocess.run([sys.executable, "-m", "dc_keras.cli.inspect", str(path)], capture_output=True,
                           text=True, env=env, timeout=300)
    assert table.returncode == 0 and "DcFullyConnected" in table.stdout and "w bits P+Q+H" in table.stdout
    missing = subprocess.run([sys.executable, "-m", "dc_keras.cli.inspect", str(path) + ".missing"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode != 0 and "no such file" in missing.stderr


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_file_is_a_clear_error_in_inspect_and_the_cli(exported, tmp_path, keep):
    path, _, _ = exported
    data = path.read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ValueError, match="truncated or corrupt|not a .tflite|blob"):
        inspect_tflite(truncated)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "dc_keras.cli.inspect", str(truncated)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "truncated.tflite" in result.stderr


@pytest.mark.parametrize("batch", [1, 32])
def test_tfmot_tf_keras_model_exports_and_matches(tmp_path, batch):
    model, _ = tfmot_lenet()
    report = dc_keras.export_tflite(model, tmp_path / "tfmot.tflite", verify=True, bias_dtype="float32")
    assert [l.name for l in report.layers] == ["ip1", "ip2", "ip3"]
    assert all(l.bits == 4 for l in report.layers)  # 16 clusters
    x = _inputs(batch, seed=3)
    got = run_tflite(delegate.make_interpreter(tmp_path / "tfmot.tflite"), x)
    assert max_rel_error(got, model(x).numpy()) <= TOLERANCE


def test_unclustered_layer_stays_stock_and_still_runs(tmp_path):
    model = keras_lenet(train=False)
    last = model.layers[-1]
    rng = np.random.default_rng(5)
    last.set_weights([rng.normal(size=(100, 10)).astype(np.float32), last.get_weights()[1]])
    report = dc_keras.export_tflite(model, tmp_path / "mixed.tflite", verify=True)
    assert [l.name for l in report.layers] == ["ip1", "ip2"]
    assert report.stock and report.stock[0]["layer"] == "ip3" and "not clustered" in report.stock[0]["reason"]
    _, ops = _ops(tmp_path / "mixed.tflite")
    assert sum(1 for code, _ in ops if code == 9) == 1
    x = _inputs(4)
    assert max_rel_error(run_tflite(delegate.make_interpreter(tmp_path / "mixed.tflite"), x), model(x)) <= TOLERANCE
    assert inspect_tflite(tmp_path / "mixed.tflite").stock == report.stock


def test_fully_pruned_layer_runs_and_gives_its_bias(tmp_path):
    # A layer pruned to nothing has a blob without centroids; the delegate must run it, not reject it.
    model = keras_lenet(train=False)
    ip2 = model.layers[1]
    kernel, bias = ip2.get_weights()
    ip2.set_weights([np.zeros_like(kernel), bias + 0.25])
    report = dc_keras.export_tflite(model, tmp_path / "zero.tflite", verify=True)
    assert "ip2" in [l.name for l in report.layers]
    x = _inputs(3)
    got = run_tflite(delegate.make_interpreter(tmp_path / "zero.tflite"), x)
    assert max_rel_error(got, model(x).numpy()) <= TOLERANCE


def test_activations_and_explicit_bits(tmp_path):
    model = keras_lenet(activations=("relu6", "tanh", "softmax"), clusters=8, train=False)
    report = dc_keras.export_tflite(model, tmp_path / "act.tflite", bits={"ip1": 6}, index_bits=4, coder="auto",
                                    verify=True)
    assert [(l.bits, l.index_bits) for l in report.layers] == [(6, 4), (3, 4), (3, 4)]


def test_no_compressible_layer_is_a_clear_error(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(30), keras.layers.Dense(5)])
    with pytest.raises(NoCompressibleLayerError, match="no layer .* can be stored compressed"):
        dc_keras.export_tflite(model, tmp_path / "plain.tflite")
    assert not (tmp_path / "plain.tflite").exists()
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten()])
    with pytest.raises(NoCompressibleLayerError):
        dc_keras.export_tflite(conv, tmp_path / "conv.tflite")


def test_more_distinct_values_than_bits_is_a_clear_error(tmp_path):
    model = keras_lenet(clusters=32, train=False)
    with pytest.raises(ExportError, match=r"'ip1' has \d+ distinct nonzero weights, more than 2\^bits = 16"):
        dc_keras.export_tflite(model, tmp_path / "m.tflite", bits=4)


def test_failed_export_leaves_existing_file_intact(tmp_path, exported):
    path = tmp_path / "keep.tflite"
    path.write_bytes(b"previous contents")
    model = keras_lenet(clusters=32, train=False)
    with pytest.raises(ExportError):
        dc_keras.export_tflite(model, path, bits=2)
    assert path.read_bytes() == b"previous contents"


@pytest.mark.parametrize("bad", ["model.keras", np.zeros(3), None])
def test_unsupported_input_is_a_clear_error(tmp_path, bad):
    with pytest.raises(ExportError, match="takes a Keras 3 or tf_keras model"):
        dc_keras.export_tflite(bad, tmp_path / "x.tflite")


def test_unstripped_model_is_a_clear_error(tmp_path):
    _, pruned = tfmot_lenet()
    with pytest.raises(ExportError, match="strip_pruning"):
        dc_keras.export_tflite(pruned, tmp_path / "x.tflite")


def test_verify_catches_a_wrong_reference(tmp_path, keras_model):
    # Verification compares against the model it is given: a model with other weights must fail it.
    with pytest.raises(ExportVerificationError):
        from dc_keras.export import exporter

        data = (Path(tmp_path) / "v.tflite")
        dc_keras.export_tflite(keras_model, data)
        other = keras_lenet(train=False)
        exporter._verify(other, data.read_bytes(), None, TOLERANCE, (1,))


def test_short_names_keep_io_and_blob_names_and_shrink_the_file(keras_model, exported, tmp_path):
    """Intermediate tensors get short names; inputs, outputs and blobs keep theirs; outputs are unchanged."""
    short_path, _, _ = exported
    long_path = tmp_path / "long.tflite"
    dc_keras.export_tflite(keras_model, long_path, short_names=False)
    assert short_path.stat().st_size < long_path.stat().st_size
    subgraph = flatbuffer.load(short_path.read_bytes()).subgraphs[0]
    names = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in subgraph.tensors]
    kept = {int(i) for i in subgraph.inputs} | {int(i) for i in subgraph.outputs}
    assert sum(n.endswith("/dc_blob") for n in names) == 3
    for index, name in enumerate(names):
        if index in kept:
            assert name != f"t{index}"
        else:
            assert name == f"t{index}" or name.endswith("/dc_blob"), name
    x = _inputs(4)
    np.testing.assert_array_equal(run_tflite(delegate.make_interpreter(short_path), x),
                                  run_tflite(delegate.make_interpreter(long_path), x))
