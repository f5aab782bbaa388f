"""Tests of dc_keras.sensitivity on tiny synthetic models (no dataset needed)."""
import numpy as np
import pytest

import keras

from dc_keras.sensitivity import SensitivityResult, magnitude_prune, sensitivity_analysis, top1_accuracy


def _linear_model(w1, w2):
    """Dense(4->3, no bias) -> Dense(3->3, no bias) with given kernels, so accuracy is predictable."""
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, use_bias=False, name="first")(inputs)
    out = keras.layers.Dense(3, use_bias=False, name="second")(h)
    model = keras.Model(inputs, out, name="tiny")
    model.get_layer("first").set_weights([np.asarray(w1, np.float32)])
    model.get_layer("second").set_weights([np.asarray(w2, np.float32)])
    return model


@pytest.fixture
def trained_tiny():
    """A small MLP fitted on a separable synthetic problem, with a held-out split."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    y = (x[:, :3].argmax(axis=1)).astype(np.int64)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="d1"),
                              keras.layers.Dense(3, name="d2")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:500], y[:500], epochs=30, batch_size=50, verbose=0)
    return model, (x[500:], y[500:])


def test_magnitude_prune_removes_exactly_the_smallest():
    values = np.array([[0.1, -3.0], [2.0, -0.2], [0.05, 1.0]], np.float32)
    pruned = magnitude_prune(values, 0.5)
    np.testing.assert_array_equal(pruned, [[0, -3.0], [2.0, 0], [0, 1.0]])
    assert np.count_nonzero(magnitude_prune(values, 0.0)) == 6
    assert np.count_nonzero(magnitude_prune(values, 1.0)) == 0
    # ties: the requested count is still hit exactly
    assert np.count_nonzero(magnitude_prune(np.ones(10), 0.3)) == 7
    with pytest.raises(ValueError):
        magnitude_prune(values, 1.5)


def test_top1_accuracy_accepts_int_and_onehot_labels():
    model = _linear_model(np.eye(4, 3), np.eye(3))
    x = np.eye(4, dtype=np.float32)[:3]
    assert top1_accuracy(model, x, np.array([0, 1, 2])) == 1.0
    assert top1_accuracy(model, x, np.eye(3)) == 1.0
    assert top1_accuracy(model, x, np.array([[0], [1], [0]])) == pytest.approx(2 / 3)


def test_curves_proposal_and_weights_restored(trained_tiny):
    model, data = trained_tiny
    before = [w.copy() for w in model.get_weights()]
    result = sensitivity_analysis(model, data, sparsities=(0.25, 0.5, 0.9), budget=0.02, verbose=0)
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    assert set(result.curves) == {"d1", "d2"}
    assert result.num_weights == {"d1": 8 * 16, "d2": 16 * 3}
    assert result.baseline > 0.8
    for name, curve in result.curves.items():
        assert len(curve) == 3
        target = result.proposal[name]
        # prefix rule: every level up to the target meets the budget
        for s, metric in zip(result.sparsities, curve):
            if s <= target:
                assert result.baseline - metric <= 0.02 + 1e-9
    assert result.combined_drop <= 0.02 + 1e-9
    assert 0.0 <= result.overall_sparsity <= 0.9
    table = result.format_table()
    assert "d1" in table and "target" in table
    as_dict = result.to_dict()
    assert as_dict["proposal"] == result.proposal and as_dict["feasible"] == result.feasible


def test_sensitive_layer_gets_lower_target_than_robust_layer():
    # first: identity-like with many tiny redundant weights (robust); second: exact 3x3 permutation
    # where every weight matters (any pruning flips a class).
    w1 = np.zeros((4, 3), np.float32)
    w1[:3, :3] = np.eye(3) * 5
    w1[3, :] = 0.001
    w2 = np.eye(3, dtype=np.float32)[[1, 2, 0]]
    model = _linear_model(w1, w2)
    x = np.eye(4, dtype=np.float32)[:3] + 0.01
    y = np.array([1, 2, 0])
    result = sensitivity_analysis(model, (x, y), sparsities=(0.25, 0.5, 0.75), budget=0.0, verbose=0)
    assert result.baseline == 1.0
    assert result.proposal["first"] == 0.75   # 9 of 12 weights are zero or tiny
    assert result.proposal["second"] == 0.5   # 6 zeros of 9 can go, 0.75 removes a one
    assert result.combined == 1.0


def test_backoff_when_layers_together_exceed_budget():
    # A synthetic metric: each layer pruned to >= 90% costs 0.06, both together a further 0.05.
    # Alone each fits the 0.08 budget; together (0.17) they do not, so one layer must back off.
    rng = np.random.default_rng(2)
    model = _linear_model(rng.normal(size=(4, 3)) + 3.0, rng.normal(size=(3, 3)) + 3.0)

    def evaluate(m):
        hard1 = np.mean(m.get_layer("first").get_weights()[0] == 0) >= 0.9
        hard2 = np.mean(m.get_layer("second").get_weights()[0] == 0) >= 0.9
        return 1.0 - 0.06 * hard1 - 0.06 * hard2 - (0.05 if (hard1 and hard2) else 0.0)

    result = sensitivity_analysis(model, None, sparsities=(0.5, 0.95), budget=0.08, evaluate_fn=evaluate,
                                  verbose=0)
    assert result.curves == {"first": [1.0, pytest.approx(0.94)], "second": [1.0, pytest.approx(0.94)]}
    assert len(result.backoff) == 1
    layer, old, new, metric_before = result.backoff[0]
    assert (old, new) == (0.95, 0.5)
    assert metric_before == pytest.approx(1.0 - 0.17)
    # equal own drops: the smaller layer ("second", 9 weights vs 12) backs off, keeping more compression
    assert layer == "second"
    assert result.proposal == {"first": 0.95, "second": 0.5}
    assert result.combined == pytest.approx(0.94)
    assert result.combined_drop <= 0.08 + 1e-9


def test_infeasible_budget_reported_not_raised():
    model = _linear_model(np.ones((4, 3)), np.ones((3, 3)))

    def evaluate(m):
        # any zero in "second" costs half the metric
        return 0.5 if np.any(m.get_layer("second").get_weights()[0] == 0) else 1.0

    result = sensitivity_analysis(model, None, sparsities=(0.8, 0.9), budget=0.1, layers=["second"],
                                  evaluate_fn=evaluate, verbose=0)
    assert not result.feasible
    assert result.proposal == {"second": 0.0}
    assert "first" not in result.curves
    assert result.combined == result.baseline == 1.0
    np.testing.assert_array_equal(model.get_layer("second").get_weights()[0], np.ones((3, 3)))


@pytest.mark.parametrize("kwargs, message", [
    ({"budget": -0.1}, "budget"),
    ({"budget": float("nan")}, "budget"),
    ({"sparsities": ()}, "empty"),
    ({"sparsities": (0.5, 1.0)}, r"\(0, 1\)"),
    ({"layers": ["nope"]}, "not compressible"),
])
def test_bad_arguments(kwargs, message):
    model = _linear_model(np.eye(4, 3), np.eye(3))
    with pytest.raises(ValueError, match=message):
        sensitivity_analysis(model, (np.eye(4, dtype=np.float32), np.arange(4) % 3), verbose=0, **kwargs)


def test_bad_data_and_model_without_compressible_layers():
    model = _linear_model(np.eye(4, 3), np.eye(3))
    with pytest.raises(ValueError, match="examples"):
        sensitivity_analysis(model, (np.zeros((4, 4)), np.zeros(3)), verbose=0)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no compressible layers"):
        sensitivity_analysis(plain, (np.zeros((2, 4)), np.zeros(2)), verbose=0)


def test_nested_model_layers_found_and_result_type():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="inner_dense")], name="inner")
    outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(3, name="outer_dense")])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    result = sensitivity_analysis(outer, (x, np.zeros(20, np.int64)), sparsities=(0.5,), budget=1.0, verbose=0)
    assert isinstance(result, SensitivityResult)
    assert set(result.curves) == {"inner_dense", "outer_dense"}
    assert result.proposal == {"inner_dense": 0.5, "outer_dense": 0.5}   # budget 1.0 accepts anything


def test_weights_restored_when_evaluation_fails():
    model = _linear_model(np.ones((4, 3)), np.ones((3, 3)))
    calls = []

    def evaluate(m):
        calls.append(1)
        if len(calls) == 3:  # baseline, first level of "first", then fail mid-analysis
            raise RuntimeError("boom")
        return 1.0

    with pytest.raises(RuntimeError, match="boom"):
        sensitivity_analysis(model, None, sparsities=(0.5, 0.9), evaluate_fn=evaluate, verbose=0)
    np.testing.assert_array_equal(model.get_layer("first").get_weights()[0], np.ones((4, 3)))
    np.testing.assert_array_equal(model.get_layer("second").get_weights()[0], np.ones((3, 3)))
