"""Time dc_keras's weight-sharing k-means against tfmot's cluster_weights on the same large layer.

A 4096x4096 Dense kernel (16.7M weights) is pruned to 10% by magnitude and clustered to 32 centroids
(5 bits, the paper's FC setting) with linear initialisation and sparsity preserved, by:

  1. dc_keras.clustering.kmeans.cluster_array  (exact Lloyd k-means to convergence + index assignment)
  2. dc_keras.cluster_weights on a Keras 3 model (copy of the layer, k-means, variables)
  3. tfmot.clustering.keras cluster_weights on a tf_keras model with the same kernel
     (tfmot 0.8: centroid initialisation and the dense nearest-centroid assignment; it runs no Lloyd
      iterations at wrap time — its centroids move only by fine-tuning)

Usage:  python benchmarks/kmeans.py [--size 4096] [--clusters 32] [--sparsity 0.9] [--repeats 3]
Prints one line per method (best of --repeats) and the ratio. Timings on a shared machine are noisy; compare
the ratio from one run.
"""
from __future__ import annotations

import argparse
import gc
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402


def _best(fn, repeats, setup=None):
    """Best wall time of `fn(setup())` over `repeats` runs (setup not timed)."""
    times = []
    for _ in range(repeats):
        argument = setup() if setup else None
        gc.collect()
        start = time.perf_counter()
        result = fn(argument) if setup else fn()
        times.append(time.perf_counter() - start)
        del result, argument
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--clusters", type=int, default=32)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-tfmot", action="store_true", help="time dc_keras only")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    kernel = rng.normal(0.0, 0.02, size=(args.size, args.size)).astype(np.float32)
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), args.sparsity)] = 0.0
    n = kernel.size
    print(f"layer {args.size}x{args.size}: {n:,} weights, {np.count_nonzero(kernel):,} nonzero "
          f"({100 * (1 - args.sparsity):.0f}%), {args.clusters} clusters, linear init, sparsity preserved")

    import keras

    import dc_keras
    from dc_keras.clustering.kmeans import cluster_array, kmeans_1d

    nonzero = kernel[kernel != 0]
    result = kmeans_1d(nonzero, args.clusters, init="linear")
    print(f"  (dc_keras Lloyd iterations to convergence: {result.iterations}, converged={result.converged})")

    t_kmeans = _best(lambda: cluster_array(kernel, args.clusters, init="linear", preserve_sparsity=True),
                     args.repeats)
    print(f"dc_keras cluster_array (k-means + indices):        {t_kmeans:7.3f} s")

    model = keras.Sequential([keras.Input((args.size,)), keras.layers.Dense(args.size, name="big")])
    model.get_layer("big").kernel.assign(kernel)

    t_wrap = _best(lambda: dc_keras.cluster_weights(model, number_of_clusters=args.clusters,
                                                    cluster_centroids_init="linear", preserve_sparsity=True),
                   args.repeats)
    print(f"dc_keras cluster_weights (Keras 3 model):           {t_wrap:7.3f} s")
    del model
    gc.collect()

    if args.skip_tfmot:
        return
    try:
        import tf_keras
        from tensorflow_model_optimization.python.core.clustering.keras.experimental import cluster as tfmot_cluster
        from tensorflow_model_optimization.python.core.clustering.keras.cluster_config import CentroidInitialization
    except ImportError as error:
        print(f"tfmot / tf_keras not installed ({error}); skipping the comparison")
        return
    def legacy_model():
        # tfmot wraps the model's own layers and rebinds their kernels, so each run needs a fresh model.
        legacy = tf_keras.Sequential([tf_keras.layers.Dense(args.size, input_shape=(args.size,), name="big")])
        legacy.get_layer("big").kernel.assign(kernel)
        return legacy

    def tfmot_run(legacy):
        return tfmot_cluster.cluster_weights(legacy, number_of_clusters=args.clusters,
                                             cluster_centroids_init=CentroidInitialization.LINEAR,
                                             preserve_sparsity=True)

    t_tfmot = _best(tfmot_run, args.repeats, setup=legacy_model)
    print(f"tfmot 0.8 cluster_weights (tf_keras model):          {t_tfmot:7.3f} s")
    print(f"ratio tfmot / dc_keras cluster_weights: {t_tfmot / t_wrap:.1f}x "
          f"(tfmot / dc_keras k-means alone: {t_tfmot / t_kmeans:.1f}x)")


if __name__ == "__main__":
    main()
