"""Pruning schedules: tfmot-equal values, validation, serialization, and the mask rules."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import dc_keras
from dc_keras.pruning.schedule import PruningSchedule, as_schedule


@pytest.fixture(scope="module")
def tfmot():
    # tfmot sets TF_USE_LEGACY_KERAS=1 for the whole process when imported; bind tf.keras to Keras 3 first
    # and restore the variable so that the other tests in this session are unaffected.
    _ = tf.keras.layers
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    module = pytest.importorskip("tensorflow_model_optimization")
    if previous is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = previous
    return module


STEPS = list(range(0, 1100)) + [5000]

POLY_ARGS = [
    dict(initial_sparsity=0.0, final_sparsity=0.9, begin_step=0, end_step=200, power=3, frequency=10),
    dict(initial_sparsity=0.2, final_sparsity=0.8, begin_step=17, end_step=233, power=1, frequency=7),
    dict(initial_sparsity=0.5, final_sparsity=0.92, begin_step=100, end_step=1000, power=2.5, frequency=1),
]
CONST_ARGS = [
    dict(target_sparsity=0.5, begin_step=0, end_step=-1, frequency=100),
    dict(target_sparsity=0.73, begin_step=13, end_step=200, frequency=3),
]


def _values(schedule, steps):
    # Both implementations are element-wise TensorFlow ops, so one call evaluates every step.
    should, sparsity = schedule(tf.constant(steps, tf.int64))
    return np.asarray(should), np.broadcast_to(np.asarray(sparsity, np.float32), (len(steps),))


@pytest.mark.parametrize("kwargs", POLY_ARGS)
def test_polynomial_decay_matches_tfmot(tfmot, kwargs):
    theirs = tfmot.sparsity.keras.PolynomialDecay(**kwargs)
    ours = dc_keras.PolynomialDecay(**kwargs)
    converted = as_schedule(theirs)
    their_should, their_sparsity = _values(theirs, STEPS)
    for schedule in (ours, converted):
        should, sparsity = _values(schedule, STEPS)
        np.testing.assert_array_equal(should, their_should)
        np.testing.assert_array_equal(sparsity, their_sparsity)
    assert isinstance(converted, dc_keras.PolynomialDecay) and converted == ours


@pytest.mark.parametrize("kwargs", CONST_ARGS)
def test_constant_sparsity_matches_tfmot(tfmot, kwargs):
    theirs = tfmot.sparsity.keras.ConstantSparsity(**kwargs)
    ours = dc_keras.ConstantSparsity(**kwargs)
    their_should, their_sparsity = _values(theirs, STEPS)
    should, sparsity = _values(ours, STEPS)
    np.testing.assert_array_equal(should, their_should)
    np.testing.assert_array_equal(sparsity, their_sparsity)
    assert as_schedule(theirs) == ours


def test_schedule_values_known_points():
    schedule = dc_keras.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, power=1, frequency=10)
    assert float(schedule(50)[1]) == pytest.approx(0.4)
    assert float(schedule(100)[1]) == pytest.approx(0.8)
    assert float(schedule(1000)[1]) == pytest.approx(0.8)  # clipped after end_step
    assert bool(schedule(10)[0]) and not bool(schedule(15)[0]) and not bool(schedule(110)[0])


@pytest.mark.parametrize("make", [
    lambda: dc_keras.ConstantSparsity(1.0, 0),
    lambda: dc_keras.ConstantSparsity(-0.1, 0),
    lambda: dc_keras.ConstantSparsity(0.5, -1),
    lambda: dc_keras.ConstantSparsity(0.5, 10, end_step=5),
    lambda: dc_keras.ConstantSparsity(0.5, 0, end_step=-2),
    lambda: dc_keras.ConstantSparsity(0.5, 0, frequency=0),
    lambda: dc_keras.ConstantSparsity(0.5, 0, frequency=-3),
    lambda: dc_keras.ConstantSparsity(0.5, 0.5),
    lambda: dc_keras.ConstantSparsity("0.5", 0),
    lambda: dc_keras.PolynomialDecay(0.0, 1.0, 0, 100),
    lambda: dc_keras.PolynomialDecay(1.5, 0.5, 0, 100),
    lambda: dc_keras.PolynomialDecay(0.0, 0.5, 0, -1),
    lambda: dc_keras.PolynomialDecay(0.0, 0.5, 100, 50),
    lambda: dc_keras.PolynomialDecay(0.0, 0.5, 100, 100),
    lambda: dc_keras.PolynomialDecay(0.0, 0.5, 0, 100, power=0),
    lambda: dc_keras.PolynomialDecay(0.0, 0.5, 0, 100, frequency=0),
    lambda: dc_keras.SensitivityThreshold(0.0),
    lambda: dc_keras.SensitivityThreshold(-1.0),
    lambda: dc_keras.SensitivityThreshold(float("nan")),
    lambda: dc_keras.SensitivityThreshold(1.0, per_layer={"ip1": 0}),
    lambda: dc_keras.SensitivityThreshold(1.0, frequency=0),
    lambda: dc_keras.SensitivityThreshold(1.0, begin_step=5, end_step=1),
])
def test_bad_parameters_raise(make):
    with pytest.raises(ValueError):
        make()


def test_as_schedule_rejects_other_objects():
    with pytest.raises(TypeError, match="pruning_schedule"):
        as_schedule(0.5)
    with pytest.raises(TypeError):
        as_schedule(lambda step: (True, 0.5))


@pytest.mark.parametrize("schedule", [
    dc_keras.PolynomialDecay(0.1, 0.9, 5, 500, power=2, frequency=20),
    dc_keras.ConstantSparsity(0.6, 3, end_step=90, frequency=4),
    dc_keras.SensitivityThreshold(0.8, begin_step=2, frequency=50, per_layer={"ip1": 1.2}),
])
def test_schedule_serialization_round_trip(schedule):
    assert type(schedule).from_config(schedule.get_config()) == schedule
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert restored == schedule and type(restored) is type(schedule)
    assert as_schedule(keras.saving.serialize_keras_object(schedule)) == schedule


def test_sensitivity_threshold_mask_and_overrides():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(40, 30)).astype("float32")
    schedule = dc_keras.SensitivityThreshold(1.0, per_layer={"ip3": 0.25})
    threshold, mask = schedule.compute_mask(tf.constant(1, tf.int64), weight)
    expected_threshold = 1.0 * np.std(weight)
    assert float(threshold) == pytest.approx(expected_threshold, rel=1e-5)
    np.testing.assert_array_equal(mask.numpy(), (np.abs(weight) >= float(threshold)).astype("float32"))
    # about 68% of a normal sample lies within one standard deviation
    assert 0.6 < 1 - mask.numpy().mean() < 0.75
    ip3 = schedule.for_layer("ip3")
    assert ip3.quality == 0.25 and ip3.per_layer == {}
    assert schedule.for_layer("ip1").quality == 1.0
    _, ip3_mask = ip3.compute_mask(tf.constant(1, tf.int64), weight)
    assert ip3_mask.numpy().mean() > mask.numpy().mean()


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 300), sparsity=st.floats(0.0, 0.99), zeros=st.floats(0.0, 1.0), seed=st.integers(0, 99))
def test_sparsity_mask_keeps_exactly_k_largest(n, sparsity, zeros, seed):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=n).astype("float32")
    weight[rng.random(n) < zeros] = 0.0  # ties at zero, as after an earlier pruning round
    schedule = dc_keras.ConstantSparsity(sparsity, 0, frequency=1)
    threshold, mask = schedule.compute_mask(tf.constant(1, tf.int64), weight)
    mask = mask.numpy()
    keep = max(int(np.round(np.float32(n) * (np.float32(1.0) - np.float32(sparsity)))), 1)
    assert mask.sum() == keep
    kept, dropped = np.abs(weight[mask == 1]), np.abs(weight[mask == 0])
    if dropped.size:
        assert kept.min() >= dropped.max()
    assert float(threshold) == pytest.approx(kept.min())


def test_custom_schedule_subclass():
    class EveryOther(PruningSchedule):
        frequency = 2

        def __call__(self, step):
            return self.should_prune(step), tf.constant(0.25)

        def get_config(self):
            return {}

    schedule = EveryOther()
    assert as_schedule(schedule) is schedule
    assert [bool(schedule.should_prune(s)) for s in range(4)] == [True, False, True, False]
    _, mask = schedule.compute_mask(1, np.arange(1, 9, dtype="float32"))
    np.testing.assert_array_equal(mask.numpy(), [0, 0, 1, 1, 1, 1, 1, 1])
