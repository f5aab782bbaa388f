"""Centroid initialisation for 1-D k-means weight sharing (Deep Compression, Section 3.2).

The paper compares three ways to place the k initial centroids of a layer's weights and finds *linear*
(evenly spaced between min and max) best: large weights are rare but important, and only linear
initialisation reliably gives them centroids of their own. Density-based (quantiles of the CDF) and random
(Forgy: k observations drawn from the data) crowd the centroids around the two peaks of a pruned layer's
bimodal distribution. k-means++ is offered because tfmot users know it.

Every function takes the layer's values *already sorted* (the k-means in kmeans.py sorts once and reuses
the order), and returns float64 centroids sorted ascending.
"""
from __future__ import annotations

import enum
from typing import Optional

import numpy as np

__all__ = ["CentroidInitialization", "resolve_init", "initial_centroids"]


class CentroidInitialization(str, enum.Enum):
    """How the k centroids of a layer are placed before the k-means iterations.

    * ``LINEAR`` (default): evenly spaced between the smallest and the largest weight (the paper's best).
    * ``DENSITY_BASED``: evenly spaced on the y axis of the weights' CDF (quantiles).
    * ``RANDOM``: Forgy — k distinct observations drawn at random from the weights.
    * ``KMEANS_PLUS_PLUS``: k-means++ seeding (D² sampling).

    Plain strings ("linear", "density", "random", "forgy", "kmeans++") and tfmot's
    ``tfmot.clustering.keras.CentroidInitialization`` members are accepted wherever this enum is.
    """

    LINEAR = "linear"
    DENSITY_BASED = "density"
    RANDOM = "random"
    KMEANS_PLUS_PLUS = "kmeans++"


# Spellings accepted for each method, lower-cased. tfmot's enum is a str enum whose values read
# "CentroidInitialization.LINEAR" etc.; its prefix is stripped before the lookup.
_ALIASES = {
    "linear": CentroidInitialization.LINEAR,
    "density": CentroidInitialization.DENSITY_BASED,
    "density_based": CentroidInitialization.DENSITY_BASED,
    "density-based": CentroidInitialization.DENSITY_BASED,
    "random": CentroidInitialization.RANDOM,
    "forgy": CentroidInitialization.RANDOM,
    "kmeans++": CentroidInitialization.KMEANS_PLUS_PLUS,
    "kmeans_plus_plus": CentroidInitialization.KMEANS_PLUS_PLUS,
    "k-means++": CentroidInitialization.KMEANS_PLUS_PLUS,
}

# k-means++ seeding costs O(n k); above this many points it runs on a uniform sample, which changes the
# seeds only within the randomness the method already has.
_KMEANS_PP_MAX_POINTS = 100_000


def resolve_init(value, layer_name: Optional[str] = None) -> CentroidInitialization:
    """Map a user's centroid-init choice (our enum, tfmot's enum or a string) to `CentroidInitialization`.

    Raises ValueError naming the layer (when given) and the value for an unknown method.
    """
    if isinstance(value, CentroidInitialization):
        return value
    text = getattr(value, "value", value)
    if isinstance(text, str):
        key = text.strip().lower()
        if key.startswith("centroidinitialization."):
            key = key[len("centroidinitialization."):]
        if key in _ALIASES:
            return _ALIASES[key]
    where = f" for layer {layer_name!r}" if layer_name else ""
    raise ValueError(
        f"unknown cluster_centroids_init {value!r}{where}: expected one of "
        f"{', '.join(repr(m.value) for m in CentroidInitialization)} "
        "(or a tfmot CentroidInitialization member)")


def initial_centroids(sorted_values: np.ndarray, number_of_clusters: int,
                      init: CentroidInitialization, rng: np.random.Generator) -> np.ndarray:
    """Initial centroids (float64, ascending) for `sorted_values` (1-D, ascending, non-empty).

    `number_of_clusters` may exceed the number of distinct values; the k-means then leaves some clusters
    empty, which is harmless (an empty cluster is an unused codebook entry).
    """
    xs = np.asarray(sorted_values)
    n = xs.shape[0]
    k = int(number_of_clusters)
    if n == 0:
        raise ValueError("cannot initialise centroids from an empty set of weights")
    if init is CentroidInitialization.LINEAR:
        centroids = np.linspace(float(xs[0]), float(xs[-1]), k)
    elif init is CentroidInitialization.DENSITY_BASED:
        # The midpoints of k equal slices of the CDF: quantile (i + 1/2) / k of the sorted data.
        positions = ((np.arange(k) + 0.5) / k * n).astype(np.int64)
        centroids = xs[np.minimum(positions, n - 1)].astype(np.float64)
    elif init is CentroidInitialization.RANDOM:
        # Forgy picks observations; when there are fewer than k, repeats fill the rest (empty clusters).
        chosen = rng.choice(n, size=k, replace=k > n)
        centroids = xs[chosen].astype(np.float64)
    elif init is CentroidInitialization.KMEANS_PLUS_PLUS:
        centroids = _kmeans_plus_plus(xs, k, rng)
    else:  # pragma: no cover - resolve_init guarantees a member
        raise ValueError(f"unknown centroid initialisation {init!r}")
    return np.sort(centroids)


def _kmeans_plus_plus(xs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on (a sample of) the 1-D data."""
    points = xs.astype(np.float64)
    if points.shape[0] > _KMEANS_PP_MAX_POINTS:
        points = points[rng.choice(points.shape[0], size=_KMEANS_PP_MAX_POINTS, replace=False)]
    centroids = np.empty(k, dtype=np.float64)
    centroids[0] = points[rng.integers(points.shape[0])]
    nearest = (points - centroids[0]) ** 2
    for i in range(1, k):
        total = nearest.sum()
        if total <= 0.0:
            # Every point already coincides with a centroid: the remaining clusters stay empty.
            centroids[i:] = centroids[0]
            break
        # D² sampling by inverse CDF; searchsorted keeps it O(n) per centroid.
        pick = int(np.searchsorted(np.cumsum(nearest), rng.random() * total, side="right"))
        centroids[i] = points[min(pick, points.shape[0] - 1)]
        nearest = np.minimum(nearest, (points - centroids[i]) ** 2)
    return centroids
