"""dc_keras.bit_allocation and index_bits="auto": per-layer widths from measured accuracy and coded size."""
from __future__ import annotations

import numpy as np
import pytest

from dc_keras import bit_allocation, codec


def _tiny(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(40, activation="relu", name="a"),
                             keras.layers.Dense(3, name="b")])


def _data(model, n=400):
    x = np.random.default_rng(1).standard_normal((n, 12)).astype(np.float32)
    return x, np.argmax(model.predict(x, verbose=0), axis=-1)  # the model's own labels: baseline 100%


def test_a_loose_budget_takes_the_smallest_widths_and_sizes_shrink():
    model = _tiny()
    x, y = _data(model)
    result = bit_allocation.allocate_bits(model, (x, y), 1.0 - 1e-9, {"a": [2, 3, 4], "b": [2, 3, 4]})
    assert result.bits == {"a": 2, "b": 2}
    assert result.baseline == 1.0
    for sizes in result.sizes.values():
        assert sizes[2] < sizes[4]
    assert [step[0] for step in result.steps].count("a") == 2
    assert result.to_dict()["bits"] == {"a": 2, "b": 2}


def test_a_zero_budget_keeps_widths_whose_step_down_loses_accuracy():
    model = _tiny()
    x, y = _data(model)
    result = bit_allocation.allocate_bits(model, (x, y), 0.0, {"a": [1, 6]})
    # One shared value per layer cannot keep every prediction: the step is refused.
    assert result.bits == {"a": 6} and result.steps == []
    assert result.baseline - result.accuracy <= 0.02


def test_the_greedy_step_follows_the_budget_measured_by_the_evaluator():
    model = _tiny()
    x, y = _data(model)
    calls = []

    def evaluate(m, xs, ys):
        kernel = np.asarray(m.get_layer("a").kernel.numpy())
        distinct = np.unique(kernel[kernel != 0]).size
        calls.append(distinct)
        return 1.0 - (0.1 if distinct <= 4 else 0.0)  # width 2 of layer a costs 10 points

    result = bit_allocation.allocate_bits(model, (x, y), 0.05, {"a": [2, 3, 4]}, evaluate=evaluate)
    assert result.bits == {"a": 3}
    assert model.get_layer("a").kernel.numpy().size == 12 * 40  # the input model is untouched
    assert np.unique(model.get_layer("a").kernel.numpy()).size > 16


def test_bad_arguments_are_named():
    model = _tiny()
    data = _data(model)
    with pytest.raises(ValueError, match="no compressible layer named"):
        bit_allocation.allocate_bits(model, data, 0.01, {"nope": [3]})
    with pytest.raises(ValueError, match="candidate bits of 'a'"):
        bit_allocation.allocate_bits(model, data, 0.01, {"a": [9]})
    with pytest.raises(ValueError, match="budget"):
        bit_allocation.allocate_bits(model, data, 1.5, {"a": [3]})


def test_candidate_bits_span_below_the_upper_width():
    assert bit_allocation.candidate_bits(["a", "b"], {"a": 5, "b": 3}) == {"a": [2, 3, 4, 5], "b": [2, 3]}


def test_smallest_index_bits_is_the_smallest_encoded_blob():
    rng = np.random.default_rng(0)
    for density in (0.02, 0.3, 0.9):
        weights = np.where(rng.random((60, 50)) < density, rng.integers(1, 5, (60, 50)), 0).astype(np.float32)
        sizes = {w: len(codec.encode(weights, bits=2, index_bits=w, layout="sparse")) for w in range(2, 9)}
        chosen = codec.smallest_index_bits(weights)
        assert sizes[chosen] == min(sizes.values()), (density, sizes, chosen)


def test_export_index_bits_auto_writes_the_smallest_width(tmp_path):
    import dc_keras
    from test_export_models import keras_lenet

    model = keras_lenet(sparsity=0.97, clusters=8, train=False)
    auto = dc_keras.export_tflite(model, tmp_path / "auto.tflite", index_bits="auto")
    fixed = dc_keras.export_tflite(model, tmp_path / "five.tflite", index_bits=5)
    assert sum(l.blob_bytes for l in auto.layers) < sum(l.blob_bytes for l in fixed.layers)
    assert any(l.index_bits != 5 for l in auto.layers)
    with pytest.raises(ValueError, match="index_bits"):
        dc_keras.export_tflite(model, tmp_path / "bad.tflite", index_bits="smallest")


def test_pipeline_bit_budget_replaces_config_bits_and_reports_them(tmp_path):
    import keras

    from dc_keras.pipeline import CompressionConfig, DeepCompression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = x[:, :3].argmax(axis=1).astype(np.int64)
    data = ((x[:240], y[:240]), (x[240:], y[240:]))
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu", name="fc1"),
                              keras.layers.Dense(3, name="fc2")])
    config = CompressionConfig(sparsity=0.5, bits={"fc1": 4, "fc2": 4}, bit_budget=0.99, epochs=1,
                               prune_epochs=1, prune_iterations=1, cluster_epochs=1, batch_size=32,
                               validation_fraction=0.25)
    dc = DeepCompression(config, data, verbose=0)
    report = dc.run(model, str(tmp_path / "out"), plots=False)
    assert dc.config.bits == {"fc1": 2, "fc2": 2}  # a budget of 99 points takes the narrowest candidates
    assert report["bit_allocation"]["bits"] == {"fc1": 2, "fc2": 2}
    assert all(row["weight_bits_pq"] <= 2 for row in report["table2"])
    assert report["file_breakdown"]["total"] == report["files"]["compressed.tflite"]
    assert "bits chosen by allocation: fc1 2, fc2 2" in (tmp_path / "out" / "report.txt").read_text()


def test_config_rejects_a_bad_bit_budget():
    from dc_keras.pipeline import CompressionConfig

    with pytest.raises(ValueError, match="bit_budget"):
        CompressionConfig(bit_budget=1.5)
