"""Pruning with regrowth (prune_low_magnitude(regrowth=True), CompressionConfig.regrowth, --regrowth): pruned
weights stay dense and keep learning through a straight-through gradient, and mask updates can revive them."""
import numpy as np
import pytest
from tiny_pipeline import tiny_data, tiny_model

import keras

import dc_keras
from dc_keras.callbacks import UpdatePruningStep
from dc_keras.cli import compress
from dc_keras.pipeline import CompressionConfig, kernel_arrays, stages, training
from dc_keras.pruning.strip import unwrap_dense
from dc_keras.pruning.wrapper import _MaskConstraint, collect_prunable_layers, read_value


def _one_useful_input_model():
    """y = 3 * x[:, 3]; the kernel starts with the useful weight the smallest, so a mask computed at the first
    step prunes it (keep 1 of 4)."""
    initial = np.array([[0.5], [0.4], [0.3], [0.01]], np.float32)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(
        1, use_bias=False, name="d", kernel_initializer=keras.initializers.Constant(initial))])


def _fit_one_useful_input(regrowth):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = 3 * x[:, 3:4]
    # begin_step 1: the first mask comes from the initial weights, before any training step.
    pruned = dc_keras.prune_low_magnitude(_one_useful_input_model(), dc_keras.ConstantSparsity(0.75, 1, frequency=4),
                                          regrowth=regrowth)
    pruned.compile(keras.optimizers.SGD(0.05), "mse")
    pruned.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[UpdatePruningStep()])
    weight, mask, _ = collect_prunable_layers(pruned)[0].pruning_vars[0]
    return pruned, read_value(weight)[:, 0], read_value(mask)[:, 0], float(pruned.evaluate(x, y, verbose=0))


def test_regrowth_revives_the_weight_that_a_first_mask_pruned():
    _, weight, mask, loss = _fit_one_useful_input(regrowth=True)
    np.testing.assert_array_equal(mask, [0, 0, 0, 1])
    assert weight[3] == pytest.approx(3.0, abs=0.1) and loss < 0.01
    assert np.count_nonzero(weight[:3]) == 3  # the pruned ones stay dense (shadow values)


def test_without_regrowth_the_pruned_weight_stays_zero():
    _, weight, mask, loss = _fit_one_useful_input(regrowth=False)
    np.testing.assert_array_equal(mask, [1, 0, 0, 0])
    assert weight[3] == 0 and np.all(weight[1:] == 0) and loss > 5


def test_pruned_dense_values_stay_within_the_threshold_between_mask_updates():
    """Adam moves a pruned weight by about its learning rate per step; unclipped, the useful weight below
    would drift to ~3 during the held mask and re-enter far above every kept weight."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = 3 * x[:, 3:4]
    held = dc_keras.ConstantSparsity(0.75, 1, frequency=10 ** 9)
    pruned = dc_keras.prune_low_magnitude(_one_useful_input_model(), held, regrowth=True)
    pruned.compile(keras.optimizers.Adam(0.1), "mse")
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[UpdatePruningStep()])
    weight, mask, threshold = (read_value(v) for v in collect_prunable_layers(pruned)[0].pruning_vars[0])
    np.testing.assert_array_equal(mask[:, 0], [1, 0, 0, 0])
    assert threshold == pytest.approx(0.5)
    # The pruned useful weight was pushed up all along and sits at the bound, the others within it.
    assert weight[3, 0] == pytest.approx(threshold)
    assert np.all(np.abs(weight[1:, 0]) <= threshold + 1e-6)


def _two_layer_model():
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu", name="d1"),
                             keras.layers.Dense(3, name="d2")])


def _masked_forward(wrappers, x):
    (k1, m1, _), (k2, m2, _) = (w.pruning_vars[0] for w in wrappers)
    b1, b2 = (read_value(w.layer.bias) for w in wrappers)
    hidden = np.maximum(x @ (read_value(k1) * read_value(m1)) + b1, 0)
    return hidden @ (read_value(k2) * read_value(m2)) + b2


@pytest.mark.parametrize("block_size", [(1, 1), {"d1": (4, 1)}])
def test_inference_uses_the_masks_and_strip_bakes_exact_sparsity(block_size):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 12)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    pruned = dc_keras.prune_low_magnitude(_two_layer_model(), dc_keras.ConstantSparsity(0.8, 1, frequency=2),
                                          block_size=block_size, regrowth=True)
    pruned.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[UpdatePruningStep()])
    wrappers = collect_prunable_layers(pruned)
    for wrapper in wrappers:
        weight, mask, _ = wrapper.pruning_vars[0]
        assert not isinstance(weight.constraint, _MaskConstraint)
        # The epoch-end apply_masks of UpdatePruningStep leaves the shadow values dense.
        assert np.count_nonzero(read_value(weight)[read_value(mask) == 0]) > 0
    np.testing.assert_allclose(pruned.predict(x, verbose=0), _masked_forward(wrappers, x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pruned(x, training=False).numpy(), _masked_forward(wrappers, x), rtol=1e-5, atol=1e-5)
    # A training call (step 13: an update step, so the mask it uses is the one read after it) is sparse too.
    np.testing.assert_allclose(pruned(x, training=True).numpy(), _masked_forward(wrappers, x), rtol=1e-5, atol=1e-5)

    stripped = dc_keras.strip_pruning(pruned)
    for wrapper, layer in zip(wrappers, stripped.layers):
        weight, mask = (read_value(v) for v in wrapper.pruning_vars[0][:2])
        kernel = layer.get_weights()[0]
        np.testing.assert_array_equal(kernel, weight * mask)
        np.testing.assert_array_equal(kernel == 0, mask == 0)
        if block_size == (1, 1) or layer.name == "d2":
            assert np.count_nonzero(kernel == 0) == round(0.8 * kernel.size)
        else:  # whole blocks of 4 inputs, as many as fit in round(0.2 * n) kept weights
            blocks = mask.reshape(3, 4, 16)
            assert np.all(blocks == blocks[:, :1, :])
            assert np.count_nonzero(kernel == 0) == kernel.size - 4 * (round(0.2 * kernel.size) // 4)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    dense = unwrap_dense(pruned)
    for wrapper, layer in zip(wrappers, dense.layers):
        np.testing.assert_array_equal(layer.get_weights()[0], read_value(wrapper.pruning_vars[0][0]))


def test_save_and_load_keep_regrowth_masks_and_dense_values(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 12)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    pruned = dc_keras.prune_low_magnitude(_two_layer_model(), dc_keras.ConstantSparsity(0.7, 1, frequency=2),
                                          regrowth=True)
    pruned.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    path = str(tmp_path / "regrowth.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    for before, after in zip(collect_prunable_layers(pruned), collect_prunable_layers(loaded)):
        assert after.regrowth is True and after.get_config()["regrowth"] is True
        for variables_before, variables_after in zip(before.pruning_vars, after.pruning_vars):
            for a, b in zip(variables_before, variables_after):
                np.testing.assert_array_equal(read_value(a), read_value(b))
            assert not isinstance(variables_after[0].constraint, _MaskConstraint)
            assert np.mean(read_value(variables_after[1]) == 0) == pytest.approx(0.7, abs=0.02)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    plain = dc_keras.prune_low_magnitude(_two_layer_model())
    assert all(w.get_config()["regrowth"] is False for w in collect_prunable_layers(plain))
    with pytest.raises(ValueError, match="regrowth must be True or False"):
        dc_keras.prune_low_magnitude(_two_layer_model(), regrowth="yes")


def test_best_epoch_restores_masks_and_dense_values_together():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = x[:, :3].argmax(axis=1)
    data = ((x[:240], y[:240]), (x[240:], y[240:]))
    config = CompressionConfig(batch_size=32, validation_fraction=0.25)
    snapshots = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([read_value(v).copy() for w in collect_prunable_layers(self.model)
                              for v in w.pruning_vars[0][:2]])

    wrapped = dc_keras.prune_low_magnitude(_two_layer_model(), dc_keras.ConstantSparsity(0.8, 1, frequency=3),
                                           regrowth=True)
    summary = training.fit(wrapped, data, config, 4, 1e-2, callbacks=[UpdatePruningStep(), Record()])
    restored = [read_value(v) for w in collect_prunable_layers(wrapped) for v in w.pruning_vars[0][:2]]
    for got, want in zip(restored, snapshots[summary["best_epoch"] - 1]):
        np.testing.assert_array_equal(got, want)
    validation = training.split_data(data, config).validation
    assert training.accuracy_on(wrapped, validation, config) == pytest.approx(summary["best_val_accuracy"])


# ---------------------------------------------------------------------------------------------- pipeline



def test_pipeline_regrows_in_all_but_the_last_iteration_and_reaches_the_targets(monkeypatch):
    config = CompressionConfig(sparsity={"fc1": 0.9, "fc2": 0.5}, prune_epochs=3, prune_iterations=3, batch_size=32,
                               validation_fraction=0.25, regrowth=True)
    calls = []
    original = dc_keras.prune_low_magnitude

    def spy(model, per_layer=None, regrowth=False, **kwargs):
        calls.append((regrowth, {n: s.frequency for n, s in per_layer.items()},
                      {n: float(np.mean(k == 0)) for n, k in kernel_arrays(model).items()}))
        return original(model, per_layer=per_layer, regrowth=regrowth, **kwargs)

    monkeypatch.setattr(dc_keras, "prune_low_magnitude", spy)
    pruned, summaries = stages.prune(tiny_model(), tiny_data(), config)
    assert len(summaries) == 3
    assert [regrowth for regrowth, _, _ in calls] == [True, True, False]
    assert [frequencies["fc1"] for _, frequencies, _ in calls] == [stages.REGROWTH_UPDATE_STEPS] * 2 + [10 ** 9]
    # Dense shadow values carry over between iterations: no zeros baked in before the last one.
    assert all(zeros == {"fc1": 0.0, "fc2": 0.0} for _, _, zeros in calls)
    sparsity = stages.sparsity_by_layer(pruned)
    assert sparsity["fc1"] == pytest.approx(0.9, abs=0.5 / (8 * 32))
    assert sparsity["fc2"] == pytest.approx(0.5, abs=0.5 / (32 * 3))
    assert not collect_prunable_layers(pruned)


def test_prune_rounds_split_a_single_iteration_and_keep_the_plain_plan():
    plain = CompressionConfig(prune_epochs=7, prune_iterations=3)
    assert stages.prune_rounds(plain) == [(1, 3, False), (2, 2, False), (3, 2, False)]
    assert stages.prune_rounds(plain.replace(regrowth=True)) == [(1, 3, True), (2, 2, True), (3, 2, False)]
    single = CompressionConfig(prune_epochs=5, prune_iterations=1, regrowth=True)
    assert stages.prune_rounds(single) == [(1, 2, True), (1, 3, False)]


def test_pipeline_single_iteration_regrows_then_holds(monkeypatch):
    config = CompressionConfig(sparsity={"fc1": 0.8}, prune_epochs=2, prune_iterations=1, batch_size=32,
                               validation_fraction=0.25, regrowth=True)
    seen = []
    original = dc_keras.prune_low_magnitude
    monkeypatch.setattr(dc_keras, "prune_low_magnitude",
                        lambda model, regrowth=False, **kwargs: seen.append(regrowth) or original(
                            model, regrowth=regrowth, **kwargs))
    pruned, summaries = stages.prune(tiny_model(), tiny_data(), config)
    assert seen == [True, False] and len(summaries) == 2
    assert stages.sparsity_by_layer(pruned)["fc1"] == pytest.approx(0.8, abs=0.5 / 256)


# ---------------------------------------------------------------------------------------------- config, CLI

@pytest.mark.parametrize("changes, message", [
    ({"regrowth": "yes"}, "regrowth must be true or false"),
    ({"regrowth": 1}, "regrowth must be true or false"),
    ({"regrowth": True, "prune_epochs": 0}, "regrowth needs retraining"),
    ({"regrowth": True, "prune_epochs": 1, "prune_iterations": 1}, "prune_epochs must be >= 2"),
])
def test_config_rejects_bad_regrowth_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        CompressionConfig(**changes)


def test_config_accepts_regrowth_and_round_trips_it():
    assert CompressionConfig().regrowth is False
    config = CompressionConfig(regrowth=True, prune_epochs=2, prune_iterations=1)
    assert CompressionConfig.from_json(config.to_json()) == config
    assert CompressionConfig.from_json(config.to_json()).regrowth is True


def _flags(*argv):
    from absl import flags

    fv = compress.define_flags(flags.FlagValues())
    fv(["dc-compress", *argv])
    return fv


def test_cli_regrowth_flag_sets_and_overrides_the_config(tmp_path):
    assert compress.build_config(_flags("--regrowth"), pretrained=True).regrowth is True
    assert CompressionConfig().regrowth is False
    assert compress.build_config(_flags(), pretrained=True).regrowth is True  # the lenet300 preset's
    assert compress.build_config(_flags("--noregrowth"), pretrained=True).regrowth is False
    path = tmp_path / "c.json"
    CompressionConfig(regrowth=True).save(str(path))
    assert compress.build_config(_flags(f"--config={path}"), pretrained=True).regrowth is True
    assert compress.build_config(_flags(f"--config={path}", "--noregrowth"), pretrained=True).regrowth is False
    with pytest.raises(compress.InputError, match="--regrowth with prune_iterations 1"):
        compress.build_config(_flags("--regrowth", "--prune_epochs=1"), pretrained=True)


def test_regrowth_training_keeps_the_inner_layers_own_state_updates():
    class CountingDense(keras.layers.Layer, dc_keras.PrunableLayer):
        """A Dense that counts its training calls in a non-trainable variable."""

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 3), initializer="ones", name="kernel")
            self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

        def call(self, inputs, training=False):
            if training:
                self.calls.assign_add(1.0)
            return inputs @ self.kernel

        def get_prunable_weights(self):
            return [self.kernel]

    x = np.random.default_rng(4).normal(size=(32, 6)).astype(np.float32)
    layer = CountingDense(name="counting")
    model = keras.Sequential([keras.Input((6,)), layer])
    pruned = dc_keras.prune_low_magnitude(model, dc_keras.ConstantSparsity(0.5, 1, frequency=2), regrowth=True)
    pruned.compile(keras.optimizers.SGD(0.01), "mse")
    pruned.fit(x, np.zeros((32, 3), np.float32), batch_size=8, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    assert float(read_value(layer.calls)) == 4
