"""prune_low_magnitude / PruneLowMagnitude on tiny models: sparsity reached, zeros kept, errors, model kinds."""
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import dc_keras
from dc_keras.callbacks import UpdatePruningStep
from dc_keras.pruning.wrapper import collect_prunable_layers, read_value


def _data(n=64, shape=(12,), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n,) + shape).astype("float32"), rng.integers(0, classes, n)


def _compile(model, lr=1e-2):
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _kernel_sparsity(wrapper):
    weight, mask, _ = wrapper.pruning_vars[0]
    return float(np.mean(weight.numpy() == 0)), int(np.sum(read_value(mask) == 0)), weight.numpy().size


class ZeroChecker(keras.callbacks.Callback):
    """After every batch: every masked position of every pruned variable is exactly zero."""

    def __init__(self):
        super().__init__()
        self.checked = 0

    def on_train_batch_end(self, batch, logs=None):
        for layer in collect_prunable_layers(self.model):
            for weight, mask, _ in layer.pruning_vars:
                assert np.all(weight.numpy()[read_value(mask) == 0] == 0), f"{layer.name}: pruned weight revived"
                self.checked += 1


def test_dense_reaches_constant_sparsity_within_one_weight():
    x, y = _data()
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(17, name="d1"), keras.layers.Dense(3)])
    pruned = _compile(dc_keras.prune_low_magnitude(model, dc_keras.ConstantSparsity(0.7, 0, frequency=1)))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    for layer in collect_prunable_layers(pruned):
        weight, mask, threshold = layer.pruning_vars[0]
        n = weight.numpy().size
        assert abs(int(np.sum(weight.numpy() == 0)) - 0.7 * n) <= 1
        assert abs(int(np.sum(read_value(mask) == 0)) - 0.7 * n) <= 1
        assert float(read_value(threshold)) > 0
        assert int(read_value(layer.pruning_step)) == 4  # 64 / 16 batches


def test_conv2d_follows_polynomial_decay_step_by_step():
    x, y = _data(n=32, shape=(8, 8, 2))
    schedule = dc_keras.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=6, power=1, frequency=2)
    model = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(6, 3, name="conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="out")])
    pruned = _compile(dc_keras.prune_low_magnitude(model, schedule, per_layer={"out": None}))
    wrappers = collect_prunable_layers(pruned)
    assert [w.layer.name for w in wrappers] == ["conv"]
    n = 3 * 3 * 2 * 6
    seen = {}

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(read_value(wrappers[0].pruning_step))
            seen[step] = int(np.sum(wrappers[0].pruning_vars[0][0].numpy() == 0))

    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[UpdatePruningStep(), Record()])
    # masks change only on even steps (frequency 2); the sparsity there is the schedule's
    for step in range(1, 9):
        update_step = step - step % 2
        expected = float(schedule(update_step)[1]) * n if update_step >= 2 else 0.0
        assert abs(seen[step] - expected) <= 1, (step, seen[step], expected)


@pytest.mark.parametrize("layer,input_shape,x_dtype", [
    (keras.layers.Conv1D(4, 3), (10, 3), "float32"),
    (keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (6, 6, 3), "float32"),
    (keras.layers.Conv2DTranspose(4, 3), (5, 5, 2), "float32"),
    (keras.layers.Embedding(20, 8), (5,), "int32"),
])
def test_other_supported_layers_are_pruned(layer, input_shape, x_dtype):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 20, (16,) + input_shape) if x_dtype == "int32" else rng.normal(size=(16,) + input_shape)
    model = keras.Sequential([keras.Input(input_shape, dtype=x_dtype), layer, keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    pruned = _compile(dc_keras.prune_low_magnitude(model, dc_keras.ConstantSparsity(0.5, 0, frequency=1),
                                                   per_layer={model.layers[-1].name: None}))
    pruned.fit(x.astype(x_dtype), rng.integers(0, 2, 16), batch_size=8, epochs=1, verbose=0,
               callbacks=[UpdatePruningStep()])
    (wrapper,) = collect_prunable_layers(pruned)
    assert wrapper.layer is layer
    zeros, masked, n = _kernel_sparsity(wrapper)
    assert abs(masked - n / 2) <= 1 and zeros >= 0.5 - 1 / n


def test_zeros_survive_further_training_and_inference_gradients_are_zero():
    x, y = _data(n=96)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, activation="relu", name="a"),
                              keras.layers.Dense(3, name="b")])
    # prune at steps 2 and 4 only, then train 3 more epochs with Adam (momentum would revive weights)
    pruned = _compile(dc_keras.prune_low_magnitude(model, dc_keras.ConstantSparsity(0.75, 2, end_step=4,
                                                                                    frequency=2)))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    wrapper = collect_prunable_layers(pruned)[0]
    weight, mask, _ = wrapper.pruning_vars[0]
    zero_positions = weight.numpy() == 0
    assert abs(zero_positions.mean() - 0.75) < 0.01
    checker = ZeroChecker()
    before = weight.numpy().copy()
    pruned.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[UpdatePruningStep(), checker])
    assert checker.checked == 18 * 2
    after = weight.numpy()
    np.testing.assert_array_equal(after == 0, zero_positions)  # same zeros, exactly
    assert not np.allclose(after[~zero_positions], before[~zero_positions])  # the rest did train
    # inference calls run on weight * mask: gradients through the wrapper are zero at pruned positions
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(pruned(x[:8], training=False) ** 2)
    grad = tape.gradient(loss, weight.value)
    assert np.all(np.asarray(grad)[zero_positions] == 0) and np.any(np.asarray(grad)[~zero_positions] != 0)


def test_custom_training_loop_and_set_weights_keep_zeros():
    x, y = _data(n=32)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, name="fc"), keras.layers.Dense(3)])
    pruned = dc_keras.prune_low_magnitude(model, dc_keras.ConstantSparsity(0.5, 0, frequency=1))
    optimizer = keras.optimizers.Adam(0.05)
    callback = UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    wrapper = collect_prunable_layers(pruned)[0]
    weight, mask, _ = wrapper.pruning_vars[0]
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, pruned(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, pruned.trainable_variables), pruned.trainable_variables))
        assert np.all(weight.numpy()[read_value(mask) == 0] == 0)
    assert int(read_value(wrapper.pruning_step)) == 5 and read_value(mask).mean() == 0.5
    # weights set from outside: inference never sees them, and training re-zeroes them at its start
    before = pruned.predict(x, verbose=0)
    pruned.set_weights([np.ones_like(w) if w is weight else w.numpy() for w in pruned.weights])
    assert np.all(weight.numpy() == 1)
    _compile(pruned).fit(x, y, epochs=1, verbose=0, callbacks=[UpdatePruningStep(), ZeroChecker()])
    assert np.all(weight.numpy()[read_value(mask) == 0] == 0)
    assert before.shape == (32, 3)


def test_masked_forward_even_if_variable_is_overwritten():
    layer = dc_keras.PruneLowMagnitude(keras.layers.Dense(4, use_bias=False))
    layer.build((None, 3))
    weight, mask, _ = layer.pruning_vars[0]
    mask.assign(np.array([[1, 0, 1, 0]] * 3, "float32"))
    weight.assign(np.ones((3, 4), "float32"))
    np.testing.assert_array_equal(layer(np.ones((1, 3), "float32")).numpy(), [[3, 0, 3, 0]])


def test_inner_activity_regularizer_loss_is_kept():
    wrapper = dc_keras.PruneLowMagnitude(keras.layers.Dense(4, activity_regularizer="l2"))
    model = keras.Sequential([keras.Input((3,)), wrapper])
    model(np.ones((2, 3), "float32"))
    assert len(model.losses) == 1 and float(model.losses[0]) > 0


def test_missing_callback_error_names_the_fix():
    x, y = _data(n=16)
    pruned = _compile(dc_keras.prune_low_magnitude(
        keras.Sequential([keras.Input((12,)), keras.layers.Dense(3)])))
    with pytest.raises(Exception, match="UpdatePruningStep"):
        pruned.fit(x, y, epochs=1, verbose=0)


def test_functional_model_with_branches_prunes_and_strips():
    inputs = keras.Input((12,))
    a = keras.layers.Dense(16, activation="relu", name="left")(inputs)
    b = keras.layers.Dense(16, activation="relu", name="right")(inputs)
    merged = keras.layers.Concatenate()([a, b])
    norm = keras.layers.BatchNormalization(name="bn")(merged)
    outputs = keras.layers.Dense(3, name="head")(norm)
    model = keras.Model(inputs, outputs)
    pruned = _compile(dc_keras.prune_low_magnitude(model, dc_keras.ConstantSparsity(0.6, 0, frequency=1),
                                                   per_layer={"head": dc_keras.ConstantSparsity(0.3, 0, frequency=1)}))
    assert sorted(w.layer.name for w in collect_prunable_layers(pruned)) == ["head", "left", "right"]
    x, y = _data()
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[UpdatePruningStep()])
    report = dc_keras.sparsity_report(pruned, print_fn=None)
    assert report.row("left").sparsity == pytest.approx(0.6, abs=1 / 192)
    assert report.row("head").sparsity == pytest.approx(0.3, abs=1 / 96)
    stripped = dc_keras.strip_pruning(pruned)
    assert not collect_prunable_layers(stripped)
    assert {layer.name for layer in stripped.layers} >= {"left", "right", "head", "bn"}
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
    assert np.mean(stripped.get_layer("left").kernel.numpy() == 0) == pytest.approx(0.6, abs=1 / 192)


def test_unsupported_layers_pass_through_in_models_but_not_directly(caplog):
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, name="fc"),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.Dropout(0.1, name="drop"),
                              keras.layers.Dense(3, name="out")])
    with caplog.at_level(logging.WARNING, logger="dc_keras"):
        pruned = dc_keras.prune_low_magnitude(model)
    assert [type(layer).__name__ for layer in pruned.layers] == [
        "PruneLowMagnitude", "BatchNormalization", "Dropout", "PruneLowMagnitude"]
    notices = [r.getMessage() for r in caplog.records if "not pruned" in r.getMessage()]
    assert len(notices) == 1 and "bn (BatchNormalization)" in notices[0] and "drop" not in notices[0]
    with pytest.raises(ValueError, match="'bn'.*BatchNormalization"):
        dc_keras.prune_low_magnitude(keras.layers.BatchNormalization(name="bn"))
    with pytest.raises(ValueError, match="BatchNormalization"):
        dc_keras.PruneLowMagnitude(keras.layers.BatchNormalization(name="bn2"))
    with pytest.raises(ValueError, match="LSTM"):
        dc_keras.prune_low_magnitude([keras.layers.Dense(3), keras.layers.LSTM(4)])


def test_layer_and_list_inputs():
    layer = keras.layers.Dense(4, name="single")
    wrapped = dc_keras.prune_low_magnitude(layer, dc_keras.ConstantSparsity(0.5, 0, frequency=1))
    assert isinstance(wrapped, dc_keras.PruneLowMagnitude) and wrapped.layer is layer
    assert wrapped.name == "prune_low_magnitude_single"
    assert dc_keras.prune_low_magnitude(wrapped) is wrapped  # already wrapped: unchanged
    wrapped_list = dc_keras.prune_low_magnitude([keras.layers.Dense(2), keras.layers.Conv2D(2, 3)])
    assert all(isinstance(w, dc_keras.PruneLowMagnitude) for w in wrapped_list)
    model = keras.Sequential([keras.Input((6,)), wrapped, keras.layers.Dense(2)])
    x, y = _data(n=16, shape=(6,), classes=2)
    _compile(model).fit(x, y, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    assert np.mean(layer.kernel.numpy() == 0) == pytest.approx(0.5, abs=1 / 24)


def test_bad_arguments_raise():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
    with pytest.raises(ValueError, match="block_size"):
        dc_keras.prune_low_magnitude(model, block_size=(0, 4))
    with pytest.raises(ValueError, match="typo"):
        dc_keras.prune_low_magnitude(model, per_layer={"typo": None})
    with pytest.raises(TypeError):
        dc_keras.prune_low_magnitude(model, pruning_schedule="0.5")
    with pytest.raises(ValueError):
        dc_keras.prune_low_magnitude("not a model")
    with pytest.raises(ValueError, match="already wrapped"):
        dc_keras.PruneLowMagnitude(dc_keras.PruneLowMagnitude(keras.layers.Dense(2)))

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    with pytest.raises(ValueError, match="subclassed"):
        dc_keras.prune_low_magnitude(Sub())


def test_custom_layer_opts_in_with_get_prunable_weights():
    @keras.saving.register_keras_serializable(package="dc_keras_tests")
    class Scale(keras.layers.Layer, dc_keras.PrunableLayer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="random_normal", name="w")
            self.offset = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="offset")

        def call(self, x):
            return x * self.w + self.offset

        def get_prunable_weights(self):
            return [self.w]

    class NotPrunable(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

        def call(self, x):
            return x * self.w

    model = keras.Sequential([keras.Input((10,)), Scale(name="scale"), NotPrunable(name="plain"),
                              keras.layers.Dense(3, name="out")])
    pruned = _compile(dc_keras.prune_low_magnitude(model, dc_keras.ConstantSparsity(0.4, 0, frequency=1)))
    names = [w.layer.name for w in collect_prunable_layers(pruned)]
    assert names == ["scale", "out"]
    x, y = _data(n=32, shape=(10,))
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    scale = pruned.layers[0].layer
    assert int(np.sum(scale.w.numpy() == 0)) == 4
    assert np.all(scale.offset.numpy() != 0)  # only the opted-in weight is pruned


def test_sensitivity_threshold_prunes_below_quality_times_std():
    layer = keras.layers.Dense(50, use_bias=False, name="ip1")
    wrapper = dc_keras.PruneLowMagnitude(
        layer, dc_keras.SensitivityThreshold(2.0, frequency=1, per_layer={"ip1": 0.5}))
    wrapper.build((None, 40))
    kernel = layer.kernel.numpy().copy()
    wrapper.pruning_step.assign(0)
    wrapper(np.zeros((1, 40), "float32"), training=True)
    _, mask, threshold = wrapper.pruning_vars[0]
    assert float(read_value(threshold)) == pytest.approx(0.5 * kernel.std(), rel=1e-5)
    np.testing.assert_array_equal(read_value(mask), (np.abs(kernel) >= 0.5 * kernel.std()).astype("float32"))


def test_tfmot_schedule_objects_are_accepted(monkeypatch):
    # tfmot sets TF_USE_LEGACY_KERAS=1 on import: bind tf.keras to Keras 3 first, then restore the variable.
    _ = tf.keras.layers
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "0")
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.1, 0.6, 0, 10, frequency=2)
    wrapper = dc_keras.prune_low_magnitude(keras.layers.Dense(3), pruning_schedule=schedule)
    assert wrapper.pruning_schedule == dc_keras.PolynomialDecay(0.1, 0.6, 0, 10, frequency=2)
