"""export_tflite(verify=True): inputs in each input's own dtype, and a tolerance derived from what float32
promises for the network (the stock .tflite's own deviation), tight enough to catch one wrong codebook
entry or one shifted index."""
from __future__ import annotations

import numpy as np
import pytest

import keras

from test_export_models import keras_lenet, prune_and_share

import dc_keras
from dc_keras.export import ExportVerificationError, exporter


def _embedding_model(vocab=200, dim=32):
    ids = keras.Input((12,), dtype="int32")
    embedded = keras.layers.Embedding(vocab, dim, name="embed")(ids)
    pooled = keras.layers.GlobalAveragePooling1D()(embedded)
    model = keras.Model(ids, keras.layers.Dense(4, name="out")(pooled))
    table, = model.get_layer("embed").get_weights()
    model.get_layer("embed").set_weights([prune_and_share(table, 0.9, 16)])
    return model


def test_embedding_model_with_int_inputs_verifies(tmp_path):
    model = _embedding_model()
    dense = tmp_path / "dense.tflite"
    report = dc_keras.export_tflite(model, tmp_path / "emb.tflite", verify=True, dense_path=dense)
    assert report.verification["max_rel_error"] <= report.verification["tolerance"]
    assert report.verification["tolerance"] >= exporter.VERIFY_TOLERANCE_FLOOR
    assert dense.stat().st_size / (tmp_path / "emb.tflite").stat().st_size >= 4


def test_generated_ids_stay_inside_the_smallest_vocabulary():
    model = _embedding_model(vocab=7)
    detail = {"dtype": np.int32, "shape_signature": np.array([-1, 12])}
    batches = exporter._verification_batches(model, detail, None, (1, 64))
    assert [b.dtype for b in batches] == [np.int32, np.int32]
    assert all(b.min() >= 0 and b.max() < 7 for b in batches)
    assert np.unique(np.concatenate([b.ravel() for b in batches])).size == 7
    given = exporter._verification_batches(model, detail, [[1.0] * 12], (1,))
    assert given[0].dtype == np.int32


@pytest.fixture(scope="module")
def exported_lenet(tmp_path_factory):
    model = keras_lenet(sparsity=0.9, clusters=16)
    directory = tmp_path_factory.mktemp("verify")
    path, dense = directory / "m.tflite", directory / "dense.tflite"
    report = dc_keras.export_tflite(model, path, verify=True, dense_path=dense)
    return model, path.read_bytes(), dense.read_bytes(), report


def test_automatic_tolerance_is_measured_and_reported(exported_lenet):
    _, _, _, report = exported_lenet
    verification = report.verification
    assert "stock_tflite_rel_error" in verification
    # The default float16 biases add their measured effect to the float32 allowance, nothing more.
    assert 0 < verification["bias_rounding_rel_error"] < 1e-3
    assert verification["tolerance"] == pytest.approx(max(
        exporter.VERIFY_TOLERANCE_FLOOR, exporter.VERIFY_TOLERANCE_MARGIN * verification["stock_tflite_rel_error"])
        + verification["bias_rounding_rel_error"])
    assert "tolerance" in report.format()


def _altered(model, change):
    """A copy of `model` whose output layer's kernel went through `change(kernel, live_row)`; live_row is the
    most active hidden unit on the verification inputs that has a weight to change (so the change cannot hide
    behind a dead ReLU)."""
    altered = keras.models.clone_model(model)
    altered.set_weights(model.get_weights())
    x = np.random.default_rng(0).standard_normal((32, model.input_shape[-1])).astype(np.float32)
    hidden = keras.Model(model.inputs, model.get_layer("ip2").output)(x)
    activity = np.asarray(hidden).mean(axis=0)
    layer = altered.get_layer("ip3")
    kernel, bias = layer.get_weights()
    usable = [r for r in np.argsort(-activity) if np.count_nonzero(kernel[r]) and kernel[r][-1] == 0]
    layer.set_weights([change(kernel.copy(), int(usable[0])), bias])
    return altered


def _one_wrong_centroid(kernel, live_row):
    centroids = np.unique(kernel[kernel != 0])
    position = np.flatnonzero(centroids == kernel[live_row][kernel[live_row] != 0][0])[0]
    neighbour = centroids[position + 1] if position + 1 < len(centroids) else centroids[position - 1]
    kernel[kernel == centroids[position]] = neighbour
    return kernel


def _one_shifted_index(kernel, live_row):
    row = kernel[live_row]
    for c in np.flatnonzero(row):
        if c + 1 < row.size and row[c + 1] == 0:
            row[c + 1], row[c] = row[c], 0.0
            return kernel
    raise AssertionError("no nonzero with a zero right neighbour")


@pytest.mark.parametrize("change", [_one_wrong_centroid, _one_shifted_index])
def test_automatic_tolerance_still_catches_small_corruptions(exported_lenet, change, tmp_path):
    # A file that differs from the model in one codebook entry or one index (made by exporting a copy of the
    # model so altered) must fail verification against the model and its own stock .tflite.
    model, _, dense, _ = exported_lenet
    corrupted = tmp_path / "corrupted.tflite"
    dc_keras.export_tflite(_altered(model, change), corrupted)
    with pytest.raises(ExportVerificationError, match="max relative error"):
        exporter._verify(model, corrupted.read_bytes(), None, None, (1, 32), dense=dense)


def test_tflite_accuracy_feeds_integer_ids(tmp_path):
    from dc_keras import pipeline

    model = _embedding_model(vocab=50)
    path = tmp_path / "emb.tflite"
    dc_keras.export_tflite(model, path)
    ids = np.random.default_rng(3).integers(0, 50, size=(40, 12)).astype(np.int64)
    labels = np.asarray(model(ids.astype(np.int32))).argmax(axis=-1)
    assert pipeline.tflite_accuracy(path, ids, labels, batch_size=16, with_dc_delegate=True) == 1.0
