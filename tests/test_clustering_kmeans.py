"""1-D k-means and centroid initialisation of dc_keras.clustering (no Keras models involved)."""
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dc_keras.clustering.centroids import CentroidInitialization, initial_centroids, resolve_init
from dc_keras.clustering.kmeans import (_reference_lloyd, assign_to_centroids, cluster_array, clustered_values,
                                        kmeans_1d)

INITS = ["linear", "density", "random", "kmeans++"]


@pytest.mark.parametrize("init", INITS)
def test_kmeans_equals_textbook_lloyd(init):
    rng = np.random.default_rng(0)
    # Bimodal like a pruned layer, plus a few rare large weights.
    x = np.concatenate([rng.normal(-0.3, 0.05, 3000), rng.normal(0.3, 0.05, 3000), [1.5, -1.2, 2.0]])
    x = x.astype(np.float32)
    result = kmeans_1d(x, 16, init=init, seed=7)
    start = initial_centroids(np.sort(x).astype(np.float64), 16, resolve_init(init), np.random.default_rng(7))
    assert result.converged
    np.testing.assert_array_equal(result.centroids, _reference_lloyd(x, start))
    assert np.all(np.diff(result.centroids) >= 0)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.integers(1, 300), elements=st.floats(-4, 4, width=32)), st.integers(1, 20))
def test_kmeans_matches_reference_on_arbitrary_data(values, k):
    result = kmeans_1d(values, k, init="linear")
    start = np.linspace(float(values.min()), float(values.max()), k)
    reference = _reference_lloyd(values, start)
    # Exact ties at a midpoint may be rounded differently by the two formulations; compare the objective.
    def cost(c):
        return np.sum((values.astype(np.float64) - c[assign_to_centroids(values, c)].astype(np.float64)) ** 2)
    assert cost(result.centroids) == pytest.approx(cost(reference), rel=1e-6, abs=1e-9)


def test_assignment_is_nearest_centroid():
    rng = np.random.default_rng(1)
    x = rng.normal(size=2000).astype(np.float32)
    result = kmeans_1d(x, 8)
    labels = assign_to_centroids(x, result.centroids)
    brute = np.argmin(np.abs(x[:, None].astype(np.float64) - result.centroids[None, :]), axis=1)
    np.testing.assert_array_equal(labels, brute)


def test_linear_init_represents_rare_large_weights_best():
    # The paper's argument for linear init: the few large weights matter and only linear init gives them
    # centroids of their own; density-based and Forgy spend the centroids on the crowded centre.
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 0.05, 10000), rng.uniform(1, 3, 20) * rng.choice([-1, 1], 20)])
    x = x.astype(np.float32)
    large = np.abs(x) > 0.5

    def large_weight_error(init):
        c = kmeans_1d(x, 8, init=init, seed=2).centroids
        return np.abs(x - c[assign_to_centroids(x, c)])[large].mean()

    linear = large_weight_error("linear")
    assert linear < 0.5 * large_weight_error("density")
    assert linear < 0.5 * large_weight_error("random")


def test_initialisations_shape_and_order():
    xs = np.sort(np.random.default_rng(3).normal(size=1000))
    for init in CentroidInitialization:
        c = initial_centroids(xs, 10, init, np.random.default_rng(0))
        assert c.shape == (10,) and np.all(np.diff(c) >= 0)
        assert xs[0] <= c.min() and c.max() <= xs[-1]
    np.testing.assert_allclose(initial_centroids(xs, 5, CentroidInitialization.LINEAR, None),
                               np.linspace(xs[0], xs[-1], 5))


def test_resolve_init_accepts_strings_and_tfmot_enum():
    assert resolve_init("Linear") is CentroidInitialization.LINEAR
    assert resolve_init("forgy") is CentroidInitialization.RANDOM
    assert resolve_init("density_based") is CentroidInitialization.DENSITY_BASED
    assert resolve_init(CentroidInitialization.KMEANS_PLUS_PLUS) is CentroidInitialization.KMEANS_PLUS_PLUS
    tfmot_config = pytest.importorskip("tensorflow_model_optimization.python.core.clustering.keras.cluster_config")
    expected = {"LINEAR": "linear", "RANDOM": "random", "DENSITY_BASED": "density",
                "KMEANS_PLUS_PLUS": "kmeans++"}
    for member in tfmot_config.CentroidInitialization:
        assert resolve_init(member).value == expected[member.name]


def test_resolve_init_rejects_unknown_name():
    with pytest.raises(ValueError, match="'mean-shift'.*'dense_1'"):
        resolve_init("mean-shift", layer_name="dense_1")


def test_cluster_array_keeps_zeros_out():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(64, 32)).astype(np.float32)
    w[np.abs(w) < 1.0] = 0.0
    centroids, indices = cluster_array(w, 16, preserve_sparsity=True)
    assert indices.shape == w.shape and indices.dtype == np.int32
    assert np.array_equal(indices == 16, w == 0)  # pruned -> index k
    shared = clustered_values(centroids, indices)
    assert np.array_equal(shared == 0, w == 0)
    used = np.unique(indices[indices < 16])
    assert np.all(np.abs(centroids[used]) >= 1.0)  # no cluster mean pulled towards the pruned zeros
    # Without preserve_sparsity the zeros are ordinary data: a centroid sits at 0.
    centroids, indices = cluster_array(w, 16, preserve_sparsity=False)
    assert indices.max() < 16 and np.min(np.abs(centroids)) == 0.0


def test_cluster_array_rejects_more_clusters_than_nonzeros():
    w = np.zeros(100, np.float32)
    w[:5] = [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="8 clusters requested but only 5 nonzero"):
        cluster_array(w, 8)


def test_large_layer_is_fast():
    # The benchmark (benchmarks/kmeans.py) times 4096x4096 against tfmot; here a loose bound on a quarter of it
    # keeps the O(k log n) iterations honest on a busy CI machine.
    rng = np.random.default_rng(5)
    w = rng.normal(size=(2048, 2048)).astype(np.float32)
    w[np.abs(w) < 1.645] = 0.0  # ~90% pruned
    start = time.perf_counter()
    centroids, indices = cluster_array(w, 32)
    elapsed = time.perf_counter() - start
    assert len(np.unique(clustered_values(centroids, indices))) <= 33
    assert elapsed < 5.0, elapsed
