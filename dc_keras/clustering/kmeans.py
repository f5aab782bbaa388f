"""Exact 1-D k-means (Lloyd) for weight sharing, fast enough for layers with tens of millions of weights.

In one dimension the clusters of a Lloyd step are contiguous runs of the sorted data, separated by the
midpoints between neighbouring centroids. So the data is sorted once, its prefix sums are kept, and one
iteration is: k-1 binary searches for the boundaries, then each cluster's sum and count from the prefix
sums — O(k log n) instead of the O(n k) of computing every weight's distance to every centroid. The result
is the same as textbook Lloyd's from the same initial centroids (ties at a midpoint go to the lower
centroid in both the iterations and the final assignment).

`cluster_array` applies it to one weight tensor, with the option to keep pruned (zero) weights out of the
clustering: they get the extra index k, which the wrapper maps to a constant 0.0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from dc_keras.clustering.centroids import initial_centroids, resolve_init

__all__ = ["KMeansResult", "kmeans_1d", "assign_to_centroids", "cluster_array", "clustered_values"]

# Lloyd's steps in 1-D usually settle within tens of iterations; each costs microseconds here, so a
# generous cap costs nothing and only guards against cycling on pathological ties.
DEFAULT_MAX_ITERATIONS = 1000


@dataclass
class KMeansResult:
    """Outcome of `kmeans_1d`: float32 centroids (ascending), iterations run, and whether it converged."""

    centroids: np.ndarray
    iterations: int
    converged: bool


def kmeans_1d(values: np.ndarray, number_of_clusters: int, init="linear",
              max_iterations: int = DEFAULT_MAX_ITERATIONS, seed: Optional[int] = None,
              sorted_input: bool = False) -> KMeansResult:
    """Lloyd's k-means on 1-D `values`; returns float32 centroids sorted ascending.

    Args:
      values: any-shaped array; flattened. Must be non-empty.
      number_of_clusters: k >= 1. May exceed the number of distinct values (clusters then stay empty and
        keep their initial position).
      init: a `CentroidInitialization` (or string / tfmot member) for the initial centroids.
      max_iterations: cap on Lloyd iterations; convergence is "no boundary moved".
      seed: seed for the random initialisations (random, kmeans++); ignored by linear and density.
      sorted_input: set when `values` is already sorted ascending, to skip the sort.
    """
    xs = np.asarray(values).reshape(-1)
    if xs.size == 0:
        raise ValueError("k-means needs at least one value")
    if not sorted_input:
        xs = np.sort(xs)
    k = int(number_of_clusters)
    if k < 1:
        raise ValueError(f"number_of_clusters must be >= 1, got {number_of_clusters}")
    rng = np.random.default_rng(seed)
    centroids = initial_centroids(xs, k, resolve_init(init), rng)

    # One float64 copy up front: searchsorted would otherwise promote the whole array on every call.
    xs = xs.astype(np.float64, copy=False)
    n = xs.shape[0]
    # float64 prefix sums: sums of millions of float32 weights keep ~1e-16 relative error.
    prefix = np.empty(n + 1, dtype=np.float64)
    prefix[0] = 0.0
    np.cumsum(xs, dtype=np.float64, out=prefix[1:])

    boundaries = None
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        midpoints = (centroids[:-1] + centroids[1:]) * 0.5
        # Values <= midpoint j belong to clusters 0..j (ties to the lower centroid).
        cut = np.searchsorted(xs, midpoints, side="right")
        if boundaries is not None and np.array_equal(cut, boundaries):
            converged = True
            break
        boundaries = cut
        edges = np.concatenate(([0], cut, [n]))
        counts = np.diff(edges)
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        # An empty cluster keeps its centroid: with linear init these are the paper's "rare large
        # weight" slots, and moving them would only re-create the crowding linear init avoids.
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        centroids = np.sort(updated)
    return KMeansResult(centroids=centroids.astype(np.float32), iterations=iterations, converged=converged)


def assign_to_centroids(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index (int32) of the nearest centroid for every value; ties go to the lower centroid.

    `centroids` must be sorted ascending. O(n log k).
    """
    c = np.asarray(centroids, dtype=np.float64)
    midpoints = (c[:-1] + c[1:]) * 0.5
    return np.searchsorted(midpoints, np.asarray(values), side="left").astype(np.int32)


def cluster_array(weights: np.ndarray, number_of_clusters: int, init="linear", preserve_sparsity: bool = True,
                  seed: Optional[int] = None, max_iterations: int = DEFAULT_MAX_ITERATIONS):
    """Cluster one weight tensor: returns (centroids float32 (k,), indices int32 shaped like `weights`).

    With `preserve_sparsity`, exact zeros are excluded from the k-means and get index k (one past the last
    centroid), which the wrapper and `strip_clustering` turn into an exact 0.0. Without it, zeros are
    ordinary data and every index is in [0, k).

    Raises ValueError when there are fewer values to cluster than clusters (the caller names the layer).
    """
    w = np.asarray(weights, dtype=np.float32)
    flat = w.reshape(-1)
    k = int(number_of_clusters)
    if preserve_sparsity:
        keep = flat != 0.0
        data = flat[keep]
    else:
        keep = None
        data = flat
    if data.size < k:
        what = "nonzero weights" if preserve_sparsity else "weights"
        raise ValueError(f"{k} clusters requested but only {data.size} {what} to cluster")
    result = kmeans_1d(data, k, init=init, seed=seed, max_iterations=max_iterations)
    labels = assign_to_centroids(data, result.centroids)
    if keep is None:
        indices = labels
    else:
        indices = np.full(flat.shape, k, dtype=np.int32)
        indices[keep] = labels
    return result.centroids, indices.reshape(w.shape)


def clustered_values(centroids: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The weights `centroids[indices]` as float32, with index k (pruned) giving exactly 0.0."""
    table = np.concatenate([np.asarray(centroids, dtype=np.float32), np.zeros(1, np.float32)])
    return table[np.asarray(indices)]


def _reference_lloyd(values: np.ndarray, initial: np.ndarray, max_iterations: int = DEFAULT_MAX_ITERATIONS):
    """Textbook O(n k) Lloyd's from given initial centroids; used by tests to check `kmeans_1d` is exact."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    c = np.sort(np.asarray(initial, dtype=np.float64))
    labels = None
    for _ in range(max_iterations):
        distance = np.abs(x[:, None] - c[None, :])
        new_labels = np.argmin(distance, axis=1)  # ties: first (lower) centroid
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        counts = np.bincount(labels, minlength=c.shape[0])
        sums = np.bincount(labels, weights=x, minlength=c.shape[0])
        c = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), c))
    return c.astype(np.float32)

