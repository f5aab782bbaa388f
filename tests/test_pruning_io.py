"""Pruned models across save/load, resumed training, MirroredStrategy, strip_pruning, reports and summaries."""
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import dc_keras
from dc_keras.callbacks import PruningSummaries, UpdatePruningStep
from dc_keras.pruning.wrapper import collect_prunable_layers, read_value


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 10)).astype("float32"), rng.integers(0, 3, n)


def _model():
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(24, activation="relu", name="fc1"),
                             keras.layers.Dense(3, name="fc2")])


def _compiled_pruned(schedule):
    pruned = dc_keras.prune_low_magnitude(_model(), pruning_schedule=schedule)
    pruned.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return pruned


def _state(model):
    return {layer.layer.name: (int(read_value(layer.pruning_step)), read_value(layer.pruning_vars[0][1]).copy(),
                               layer.pruning_vars[0][0].numpy().copy()) for layer in collect_prunable_layers(model)}


def test_save_load_without_custom_objects_and_resume_schedule(tmp_path):
    x, y = _data()
    # 8 steps per epoch; sparsity rises 0.2 -> 0.8 over steps 0..24, masks updated every 4 steps
    schedule = dc_keras.PolynomialDecay(0.2, 0.8, begin_step=0, end_step=24, power=1, frequency=4)
    pruned = _compiled_pruned(schedule)
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    before = _state(pruned)

    restored = keras.models.load_model(path)  # no custom_objects: the classes are registered by dc_keras
    assert [type(layer).__name__ for layer in restored.layers] == ["PruneLowMagnitude", "PruneLowMagnitude"]
    assert restored.layers[0].pruning_schedule == schedule
    after = _state(restored)
    for name, (step, mask, weight) in before.items():
        assert after[name][0] == step == 8
        np.testing.assert_array_equal(after[name][1], mask)
        np.testing.assert_array_equal(after[name][2], weight)
    np.testing.assert_allclose(restored.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)

    # resumed training continues the schedule from step 8 (not 0) and ends at the final sparsity
    restored.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[UpdatePruningStep()])
    for layer in collect_prunable_layers(restored):
        weight, mask, _ = layer.pruning_vars[0]
        assert int(read_value(layer.pruning_step)) == 24
        assert abs(int(np.sum(read_value(mask) == 0)) - 0.8 * read_value(mask).size) <= 1
        assert np.all(weight.numpy()[read_value(mask) == 0] == 0)
    # pruned positions of the saved masks stay pruned (sparsity only grows)
    for layer in collect_prunable_layers(restored):
        old_mask = before[layer.layer.name][1]
        assert np.all(read_value(layer.pruning_vars[0][1])[old_mask == 0] == 0)


def test_wrapper_config_round_trip():
    wrapper = dc_keras.PruneLowMagnitude(keras.layers.Conv2D(4, 3, name="c"),
                                         dc_keras.SensitivityThreshold(0.7, frequency=3))
    config = wrapper.get_config()
    clone = dc_keras.PruneLowMagnitude.from_config(config)
    assert clone.name == wrapper.name == "prune_low_magnitude_c"
    assert clone.pruning_schedule == wrapper.pruning_schedule
    assert clone.layer.get_config() == wrapper.layer.get_config()
    serialized = keras.saving.serialize_keras_object(wrapper)
    assert serialized["registered_name"] == "dc_keras>PruneLowMagnitude"
    assert isinstance(keras.saving.deserialize_keras_object(serialized), dc_keras.PruneLowMagnitude)


def test_mirrored_strategy_training():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs 2 logical CPU devices (tests/conftest.py configures them)")
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    x, y = _data(n=128)
    with strategy.scope():
        pruned = _compiled_pruned(dc_keras.ConstantSparsity(0.65, 0, frequency=2))
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[UpdatePruningStep()])
    for layer in collect_prunable_layers(pruned):
        assert int(read_value(layer.pruning_step)) == 16
        weight, mask, _ = layer.pruning_vars[0]
        n = read_value(mask).size
        assert abs(int(np.sum(read_value(mask) == 0)) - 0.65 * n) <= 1
        # both replicas hold the same mask, and the weights are zero where it is
        replica_masks = [v.numpy() for v in mask.value.values]
        np.testing.assert_array_equal(replica_masks[0], replica_masks[1])
        assert np.all(weight.numpy()[read_value(mask) == 0] == 0)
    stripped = dc_keras.strip_pruning(pruned)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)


def test_strip_pruning_bakes_zeros_and_leaves_a_plain_model(tmp_path):
    x, y = _data()
    pruned = _compiled_pruned(dc_keras.ConstantSparsity(0.5, 0, frequency=1))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    # a stale nonzero in the variable is still stripped away: strip uses weight * mask
    weight, mask, _ = collect_prunable_layers(pruned)[0].pruning_vars[0]
    stale = weight.numpy()
    stale[read_value(mask) == 0] = 5.0
    weight.assign(stale)
    stripped = dc_keras.strip_pruning(pruned)
    assert [type(layer).__name__ for layer in stripped.layers] == ["Dense", "Dense"]
    assert [layer.name for layer in stripped.layers] == ["fc1", "fc2"]
    kernel = stripped.get_layer("fc1").kernel
    assert kernel.constraint is None  # the mask constraint does not leak into the plain model
    assert int(np.sum(kernel.numpy() == 0)) == int(np.sum(read_value(mask) == 0))
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
    path = str(tmp_path / "stripped.keras")
    stripped.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.get_layer("fc1").kernel.numpy(), kernel.numpy())
    # stripping a single wrapper
    single = dc_keras.strip_pruning(collect_prunable_layers(pruned)[1])
    assert type(single) is keras.layers.Dense
    np.testing.assert_array_equal(single.kernel.numpy(), stripped.get_layer("fc2").kernel.numpy())
    with pytest.raises(ValueError):
        dc_keras.strip_pruning("model")


def test_nested_model_is_pruned_and_stripped():
    inner = keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, name="inner_fc")], name="inner")
    inputs = keras.Input((10,))
    outputs = keras.layers.Dense(3, name="outer_fc")(inner(inputs))
    model = keras.Model(inputs, outputs)
    pruned = dc_keras.prune_low_magnitude(model, dc_keras.ConstantSparsity(0.5, 0, frequency=1))
    assert sorted(layer.layer.name for layer in collect_prunable_layers(pruned)) == ["inner_fc", "outer_fc"]
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(n=16)
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    stripped = dc_keras.strip_pruning(pruned)
    assert not collect_prunable_layers(stripped)
    report = dc_keras.sparsity_report(stripped, print_fn=None)
    assert [row.layer for row in report] == ["inner_fc", "outer_fc"]
    assert report.row("inner_fc").sparsity == pytest.approx(0.5)


def test_sparsity_report_rows_and_table():
    x, y = _data()
    pruned = _compiled_pruned(dc_keras.ConstantSparsity(0.75, 0, frequency=1))
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    printed = []
    report = dc_keras.sparsity_report(pruned, print_fn=printed.append)
    assert [(r.layer, r.weight, r.kind, r.shape, r.n_weights) for r in report] == [
        ("fc1", "kernel", "fc", (10, 24), 240), ("fc2", "kernel", "fc", (24, 3), 72)]
    assert report.row("fc1").nonzeros == 60 and report.row("fc2").nonzeros == 18
    assert report.sparsity == pytest.approx(0.75) and report.n_weights == 312
    table = printed[0]
    assert "fc1" in table and "75.00%" in table and "total" in table and "312" in table
    stripped_report = dc_keras.sparsity_report(dc_keras.strip_pruning(pruned), print_fn=None)
    assert list(stripped_report) == list(report)
    dense_report = dc_keras.sparsity_report(_model(), print_fn=None)
    assert dense_report.sparsity == 0.0 and dense_report.row("fc2").density == 1.0
    with pytest.raises(KeyError):
        report.row("nope")


def test_pruning_summaries_write_sparsity_and_threshold(tmp_path):
    x, y = _data()
    pruned = _compiled_pruned(dc_keras.ConstantSparsity(0.5, 0, frequency=1))
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0,
               callbacks=[UpdatePruningStep(), PruningSummaries(str(tmp_path), update_freq=2)])
    files = glob.glob(os.path.join(str(tmp_path), "pruning", "events.out.tfevents.*"))
    assert files
    values = {}
    for record in tf.data.TFRecordDataset(files):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            values.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    assert set(values) == {"pruning/fc1/kernel/sparsity", "pruning/fc1/kernel/threshold",
                           "pruning/fc2/kernel/sparsity", "pruning/fc2/kernel/threshold"}
    sparsity = values["pruning/fc1/kernel/sparsity"]
    assert sparsity[0] == (0, 0.0)  # logged at train begin, before any mask update
    assert sparsity[-1][0] == 8 and sparsity[-1][1] == pytest.approx(0.5)
    assert len(sparsity) == 1 + 4 + 2  # begin, every 2 of 8 batches, 2 epoch ends
    with pytest.raises(ValueError):
        PruningSummaries("")
    with pytest.raises(ValueError):
        PruningSummaries(str(tmp_path), update_freq=0)
