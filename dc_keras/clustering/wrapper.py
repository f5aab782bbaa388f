"""Trained quantization (weight sharing) as a Keras 3 wrapper layer: Deep Compression, Section 3.

`cluster_weights` wraps the compressible weights of a layer (or of every supported layer of a model) so that
each weight tensor W becomes `centroids[indices]`:

* `indices` (int32, non-trainable) come from a 1-D k-means over the layer's weights and stay fixed;
* `centroids` (float, trainable) are fine-tuned by `model.fit`; the gradient of a centroid is the sum of the
  gradients of the weights that share it (the paper's rule), computed with one segment sum;
* with `preserve_sparsity=True` (default) pruned weights (exact zeros) take no part in the k-means and get
  the extra index k, which reads as a constant 0.0: they stay exactly zero, bit for bit, whatever the
  training does.

The wrapped layer itself is untouched: during the wrapper's call its clustered variables read the shared
values through a `keras.StatelessScope`, so any layer whose compressible weights are Keras variables works,
including user layers that implement `get_clusterable_weights()` (see `ClusterableLayer`).

Wrapped models save to `.keras` and load without custom objects (the class is registered under the
"dc_keras" package when dc_keras is imported) and fine-tuning resumes from the saved centroids and indices.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from dc_keras import layer_registry, limits
from dc_keras.per_layer import resolve_per_layer
from dc_keras.limits import MAX_CLUSTERING_BITS, MIN_BITS
from dc_keras.clustering.centroids import CentroidInitialization, resolve_init
from dc_keras.clustering.kmeans import cluster_array, clustered_values

__all__ = ["cluster_weights", "ClusterWeights", "ClusterableLayer", "CentroidInitialization",
           "MAX_BITS", "bits_for_clusters"]

logger = logging.getLogger("dc_keras.clustering")

_PROTOCOL = "get_clusterable_weights"
MAX_BITS = MAX_CLUSTERING_BITS
_PREFIX = "cluster_"


def bits_for_clusters(number_of_clusters: int) -> int:
    """Bits of a codebook index for k clusters: ceil(log2 k), at least 1 (limits.bits_for_values)."""
    return limits.bits_for_values(number_of_clusters)


class ClusterableLayer:
    """Mixin for user layers that opt in to weight sharing (tfmot's ClusterableLayer contract).

    Implement `get_clusterable_weights()` returning a list of `(name, variable)` pairs: the weights to
    share. The layer's `call` must read those variables (directly or through Keras ops); nothing else is
    needed — the wrapper substitutes their shared values while the layer runs.
    """

    def get_clusterable_weights(self) -> List[Tuple[str, object]]:
        """(name, variable) pairs of the weights to cluster."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_clusterable_weights() returning (name, variable) pairs")


def _shared_values(centroids, indices, number_of_clusters: int):
    """`concat(centroids, [0])[indices]` with the paper's gradient: d centroid = sum of d weights sharing it.

    tf.gather alone gives the same numbers, but as IndexedSlices with one slice per weight; a segment sum
    over the flat indices gives the dense (k,) gradient directly, and drops index k (pruned weights).
    """
    k = number_of_clusters

    @tf.custom_gradient
    def gather(c):
        table = tf.concat([c, tf.zeros([1], dtype=c.dtype)], axis=0)
        values = tf.gather(table, indices)

        def grad(upstream):
            sums = tf.math.unsorted_segment_sum(
                tf.reshape(upstream, [-1]), tf.reshape(indices, [-1]), num_segments=k + 1)
            return sums[:k]

        return values, grad

    return gather(centroids)


@keras.saving.register_keras_serializable(package="dc_keras")
class ClusterWeights(layer_registry.WeightTransformWrapper):
    """Wraps a layer so that its compressible weights are shared through a trainable k-entry codebook.

    Args:
      layer: the layer to wrap: a built-in type of `dc_keras.layer_registry` or a layer implementing
        `get_clusterable_weights()`. When it is already built, the k-means runs now on its weights;
        otherwise at build time (on its initial weights — what `from_config` and `.keras` loading do,
        after which the saved centroids and indices are restored).
      number_of_clusters: codebook size k (1..65536; `cluster_weights` asks for 2..65536 explicitly and
        may choose fewer than the default for a layer with fewer weights than that).
      cluster_centroids_init: `CentroidInitialization`, a string, or a tfmot member. Default linear.
      preserve_sparsity: keep exact zeros (pruned weights) out of the k-means and exactly zero.
      seed: seed of the random initialisations (random, kmeans++); None draws one from NumPy's global RNG.
    """

    TRANSFORM = "clustering"

    def __init__(self, layer, number_of_clusters: int, cluster_centroids_init="linear",
                 preserve_sparsity: bool = True, seed: Optional[int] = None, **kwargs):
        _check_layer_to_wrap(layer, "ClusterWeights wraps a Keras layer")
        k = int(number_of_clusters)
        if not 1 <= k <= 2 ** MAX_BITS:
            raise ValueError(
                f"number_of_clusters for layer {layer.name!r} must be in 1..{2 ** MAX_BITS}, got {number_of_clusters}")
        kwargs.setdefault("name", _PREFIX + layer.name)
        # Same dtype policy as the wrapped layer, so mixed precision behaves as without the wrapper.
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.number_of_clusters = k
        self.cluster_centroids_init = resolve_init(cluster_centroids_init, layer.name)
        self.preserve_sparsity = bool(preserve_sparsity)
        self.seed = seed
        # (name, original variable, centroids variable, indices variable) per clustered weight.
        self._clustered: List[Tuple[str, object, object, object]] = []
        if layer.built:
            build_config = layer.get_build_config() or {}
            self.build(build_config.get("input_shape"))

    # -- structure -------------------------------------------------------------------------------------

    @property
    def bits(self) -> int:
        """Bits per codebook index: ceil(log2 number_of_clusters)."""
        return bits_for_clusters(self.number_of_clusters)

    @property
    def kind(self) -> str:
        """The wrapped layer's kind in layer_registry ("conv", "fc", "embedding", "custom")."""
        return layer_registry.layer_kind(self.layer)

    def build(self, input_shape=None):
        """Builds the wrapped layer if needed, creates centroids/indices and runs the k-means."""
        if self._clustered:
            return
        if not self.layer.built:
            if input_shape is None:
                raise ValueError(f"cannot build clustering wrapper of layer {self.layer.name!r} without an input shape")
            self.layer.build(input_shape)
            self.layer.built = True
        for name, variable in layer_registry.compressible_weights(self.layer, _PROTOCOL):
            if not isinstance(variable, keras.Variable):
                raise ValueError(
                    f"layer {self.layer.name!r}: clusterable weight {name!r} is not a keras.Variable "
                    f"({type(variable).__name__})")
            if variable.dtype not in ("float16", "bfloat16", "float32", "float64"):
                raise ValueError(f"layer {self.layer.name!r}: cannot cluster weight {name!r} of dtype {variable.dtype}")
            centroids = self.add_weight(
                name=f"{name}_centroids", shape=(self.number_of_clusters,), dtype=variable.dtype,
                initializer="zeros", trainable=True)
            indices = self.add_weight(
                name=f"{name}_indices", shape=tuple(variable.shape), dtype="int32",
                initializer="zeros", trainable=False)
            # The original variable is no longer read during training (its shared value is substituted),
            # so it must not be handed to the optimizer: it would get no gradient.
            variable.trainable = False
            self._clustered.append((name, variable, centroids, indices))
        if not self._clustered:
            raise ValueError(f"layer {self.layer.name!r} has no clusterable weights")
        self.built = True
        # Clustering reads the weights as NumPy; build may run while a graph is being traced
        # (symbolic build), so step out to eager mode for it.
        with tf.init_scope():
            self.recluster()

    def recluster(self, weights: Optional[Dict[str, np.ndarray]] = None) -> None:
        """(Re)runs the k-means on the wrapped layer's current weights, or on `weights` (name -> array).

        Resets the centroids and the indices; `cluster_weights` and `build` call it, users rarely need to.
        Raises ValueError naming the layer when there are fewer weights to cluster than clusters.
        """
        for name, variable, centroids, indices in self._clustered:
            values = np.asarray(weights[name] if weights and name in weights else variable.numpy())
            try:
                codebook, assignment = cluster_array(
                    values, self.number_of_clusters, init=self.cluster_centroids_init,
                    preserve_sparsity=self.preserve_sparsity, seed=self._seed_for(name))
            except ValueError as error:
                raise ValueError(f"layer {self.layer.name!r}, weight {name!r}: {error}") from None
            centroids.assign(codebook.astype(centroids.dtype))
            indices.assign(assignment)

    def _seed_for(self, name: str) -> Optional[int]:
        if self.seed is None:
            # Draw from NumPy's global RNG so that np.random.seed / keras.utils.set_random_seed reproduce.
            return int(np.random.randint(0, 2 ** 31 - 1))
        return int(self.seed) + sum(map(ord, name))

    # -- forward ---------------------------------------------------------------------------------------

    def shared_weight(self, name: str):
        """The current shared value of clustered weight `name` (a tensor; differentiable w.r.t. centroids)."""
        for weight_name, _, centroids, indices in self._clustered:
            if weight_name == name:
                return _shared_values(tf.convert_to_tensor(centroids), tf.convert_to_tensor(indices),
                                      self.number_of_clusters)
        raise KeyError(f"layer {self.layer.name!r} has no clustered weight {name!r}")

    def get_clustered_weights(self) -> Dict[str, np.ndarray]:
        """name -> NumPy array of the clustered weights as they are used (exactly the centroid values)."""
        return {name: clustered_values(c.numpy(), i.numpy())
                for name, _, c, i in self._clustered}

    def get_codebooks(self) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        """name -> (centroids float, indices int32); index == number_of_clusters marks a pruned weight."""
        return {name: (c.numpy(), i.numpy())
                for name, _, c, i in self._clustered}

    def call(self, inputs, *args, **kwargs):
        """Runs the wrapped layer with its clustered weights reading `centroids[indices]`."""
        from keras.src.backend.common.stateless_scope import get_stateless_scope

        replaced = {id(variable) for _, variable, _, _ in self._clustered}
        mapping = [(variable, _shared_values(tf.convert_to_tensor(centroids), tf.convert_to_tensor(indices),
                                             self.number_of_clusters))
                   for _, variable, centroids, indices in self._clustered]
        outer = get_stateless_scope()
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            if outer is not None:
                # Inside an enclosing stateless scope (symbolic build, JAX training), keep its values for
                # every variable we do not replace.
                for key, value in outer.state_mapping.items():
                    scope.state_mapping.setdefault(key, value)
            entry = dict(scope.state_mapping)
            outputs = self.layer(inputs, *args, **kwargs)
        # Updates the wrapped layer made to its other variables inside the scope were only recorded:
        # apply them (or hand them on to the enclosing scope).
        for variable in self.layer.variables:
            key = id(variable)
            if key in replaced:
                continue
            value = scope.state_mapping.get(key)
            if value is not None and value is not entry.get(key):
                variable.assign(value)
        if scope.losses:
            self.add_loss(scope.losses)
        return outputs

    # -- serialization ---------------------------------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update({
            "number_of_clusters": self.number_of_clusters,
            "cluster_centroids_init": self.cluster_centroids_init.value,
            "preserve_sparsity": self.preserve_sparsity,
            "seed": self.seed,
        })
        return config


# -- cluster_weights ----------------------------------------------------------------------------------------

def _per_layer(value, layer_name: str):
    """The setting for `layer_name` from a scalar-or-dict option (None when a dict does not name it)."""
    return resolve_per_layer(value, layer_name)


def _check_dict_keys(value, known: List[str], what: str) -> None:
    """A per-layer dict may only name layers that can be clustered: catches typos in layer names."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"{what} names layers that are not clusterable layers of the model: {unknown}; "
                             f"clusterable layers: {sorted(known)}")


def _count_to_cluster(layer, preserve_sparsity: bool) -> int:
    """Smallest number of weights to cluster over the layer's clusterable weights."""
    counts = []
    for _, variable in layer_registry.compressible_weights(layer, _PROTOCOL):
        values = variable.numpy()
        counts.append(int(np.count_nonzero(values)) if preserve_sparsity else int(values.size))
    return min(counts) if counts else 0


def _clusters_for(layer, number_of_clusters, bits, preserve_sparsity: bool) -> int:
    """The k for `layer`: explicit clusters or bits (scalar or per-layer dict), else the paper's default."""
    clusters = _per_layer(number_of_clusters, layer.name)
    layer_bits = _per_layer(bits, layer.name)
    if clusters is not None and layer_bits is not None:
        raise ValueError(f"layer {layer.name!r}: give number_of_clusters or bits, not both "
                         f"(got {clusters} clusters and {layer_bits} bits)")
    available = _count_to_cluster(layer, preserve_sparsity)
    what = "nonzero weights" if preserve_sparsity else "weights"
    if layer_bits is not None:
        if isinstance(layer_bits, bool) or not isinstance(layer_bits, (int, np.integer)) \
                or not MIN_BITS <= layer_bits <= MAX_BITS:
            raise ValueError(f"layer {layer.name!r}: bits must be an integer in {MIN_BITS}..{MAX_BITS}, "
                             f"got {layer_bits!r}")
        clusters = 2 ** int(layer_bits)
    if clusters is not None:
        if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)) \
                or not 2 <= clusters <= 2 ** MAX_BITS:
            raise ValueError(f"layer {layer.name!r}: number_of_clusters must be an integer in "
                             f"2..{2 ** MAX_BITS}, got {clusters!r}")
        if clusters > available:
            raise ValueError(f"layer {layer.name!r}: {clusters} clusters requested but it has only "
                             f"{available} {what}; ask for fewer clusters/bits")
        return int(clusters)
    # The paper's per-kind default. A layer smaller than its codebook (a tiny conv at 8 bits) gets one
    # cluster per weight instead: that loses nothing, and an error here would punish the default.
    default = 2 ** layer_registry.DEFAULT_BITS[layer_registry.layer_kind(layer)]
    if available == 0:
        raise ValueError(f"layer {layer.name!r} has no {what} to cluster")
    if available < default:
        logger.warning("dc_keras.cluster_weights: layer %r has %d %s, fewer than the default %d clusters; "
                       "using %d", layer.name, available, what, default, available)
    return min(default, available)


def _copy_layer(layer):
    """A new layer with `layer`'s config and weights, so that clustering leaves the user's model alone."""
    config = layer.get_config()
    # Building the copy would draw random initial weights only to overwrite them (over a second for a
    # 4096x4096 kernel): build with zeros, then give the copy its real initializers back so that its
    # config and any re-initialisation are unchanged.
    initializers = {key: value for key, value in config.items()
                    if key.endswith("_initializer") and value is not None and hasattr(layer, key)}
    try:
        copy = layer.__class__.from_config({**config, **{key: "zeros" for key in initializers}})
    except Exception:  # a layer whose config does not take "zeros" there: build it the ordinary way
        initializers = {}
        copy = layer.__class__.from_config(config)
    build_config = layer.get_build_config()
    if build_config is not None:
        copy.build_from_config(build_config)
    if layer.weights:
        copy.set_weights(layer.get_weights())
    for key, value in initializers.items():
        setattr(copy, key, keras.initializers.get(value))
    return copy


def _check_clusterable(layer) -> None:
    """ValueError for a layer that is already clustered or still wrapped for pruning."""
    if isinstance(layer, ClusterWeights):
        raise ValueError(f"layer {layer.name!r} is already clustered")
    if layer_registry.is_pruning_wrapper(layer):
        inner = getattr(getattr(layer, "layer", None), "name", "?")
        raise ValueError(
            f"layer {layer.name!r} (wrapping {inner!r}) is still wrapped for pruning ({type(layer).__name__}): "
            "call dc_keras.strip_pruning(model) first, then cluster the stripped model (pruned zeros are kept)")


def _check_layer_to_wrap(layer, not_a_layer: str) -> None:
    """ValueError for a single layer that cannot be wrapped: not a Keras layer (message starts with
    `not_a_layer`), already clustered, still wrapped for pruning, or of a type nobody taught us to cluster."""
    if not isinstance(layer, keras.layers.Layer):
        raise ValueError(f"{not_a_layer}, got {type(layer).__name__}: {layer!r}")
    _check_clusterable(layer)
    if not layer_registry.is_supported(layer, _PROTOCOL):
        raise ValueError(
            f"layer {layer.name!r} of type {type(layer).__name__} cannot be clustered: supported are the "
            "layer types of dc_keras.layer_registry and layers implementing get_clusterable_weights()")


def cluster_weights(to_cluster, number_of_clusters=None, bits=None,
                    cluster_centroids_init=CentroidInitialization.LINEAR, preserve_sparsity: bool = True,
                    seed: Optional[int] = None):
    """Wrap a model, a layer or a list of layers for weight sharing (trained quantization).

    Same contract as `tfmot.clustering.keras.cluster_weights`: give a built `keras.Model` (Sequential or
    functional; returns a new model, the original is left untouched), a built layer (returns its
    `ClusterWeights` wrapper) or a list of layers (returns a list). Then `compile` and `fit` to fine-tune
    the centroids, and `dc_keras.strip_clustering` to get plain layers back.

    Args:
      to_cluster: model, layer or list of layers. Layers must be built (k-means needs trained weights).
      number_of_clusters: codebook size k, an int for every layer or a dict {layer name: k}.
      bits: alternatively, index bits b (k = 2**b, b in 1..16), an int or a dict {layer name: b}.
        A layer given neither gets the paper's default: 8 bits for conv layers, 5 for fully-connected
        (`dc_keras.layer_registry.DEFAULT_BITS`).
      cluster_centroids_init: linear (default, the paper's best), density, random (Forgy) or kmeans++;
        a `CentroidInitialization`, a string, or tfmot's enum.
      preserve_sparsity: keep pruned weights (exact zeros) out of the k-means and exactly zero.
      seed: seed for random/kmeans++ initialisation; None uses NumPy's global RNG.

    Layers that cannot be clustered pass through a model unchanged, with a one-line notice; asking for
    one directly raises ValueError. Models still wrapped for pruning must be stripped first
    (`dc_keras.strip_pruning`). Weight regularizers of clustered weights are not applied to the shared
    values (they see the original, frozen weights).
    """
    resolve_init(cluster_centroids_init)  # fail on a bad name before any work
    if number_of_clusters is not None and bits is not None \
            and not isinstance(number_of_clusters, dict) and not isinstance(bits, dict):
        raise ValueError(f"give number_of_clusters or bits, not both (got {number_of_clusters} and {bits})")

    def wrap(layer, copy: bool):
        k = _clusters_for(layer, number_of_clusters, bits, preserve_sparsity)
        return ClusterWeights(_copy_layer(layer) if copy else layer, number_of_clusters=k,
                              cluster_centroids_init=cluster_centroids_init,
                              preserve_sparsity=preserve_sparsity, seed=seed)

    def check_layer(layer):
        _check_layer_to_wrap(layer, "cluster_weights expects Keras layers")
        if not layer.built:
            raise ValueError(f"layer {layer.name!r} is not built: build or train it before clustering "
                             "(k-means runs on its weights)")

    if isinstance(to_cluster, keras.Model):
        return _cluster_model(to_cluster, wrap, number_of_clusters, bits)
    if isinstance(to_cluster, keras.layers.Layer):
        check_layer(to_cluster)
        _check_dict_keys(number_of_clusters, [to_cluster.name], "number_of_clusters")
        _check_dict_keys(bits, [to_cluster.name], "bits")
        return wrap(to_cluster, copy=False)
    if isinstance(to_cluster, (list, tuple)):
        for layer in to_cluster:
            check_layer(layer)
        names = [layer.name for layer in to_cluster]
        _check_dict_keys(number_of_clusters, names, "number_of_clusters")
        _check_dict_keys(bits, names, "bits")
        return [wrap(layer, copy=False) for layer in to_cluster]
    raise ValueError(f"cluster_weights expects a keras.Model, a layer or a list of layers, got "
                     f"{type(to_cluster).__name__}")


def _cluster_model(model, wrap, number_of_clusters, bits):
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built: build or train it before clustering")
    from keras.src.models.functional import Functional

    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(f"model {model.name!r} is a subclassed model: cluster_weights supports Sequential and "
                         "functional models; wrap the layers of a subclassed model with cluster_weights(layer)")
    layers = model.layers
    for layer in layers:
        _check_clusterable(layer)
    clusterable = [layer.name for layer in layers
                   if not isinstance(layer, keras.Model) and layer_registry.is_supported(layer, _PROTOCOL)]
    _check_dict_keys(number_of_clusters, clusterable, "number_of_clusters")
    _check_dict_keys(bits, clusterable, "bits")
    skipped = []

    def clone(layer):
        if layer.name in clusterable:
            return wrap(layer, copy=True)
        if layer.weights:
            skipped.append(f"{layer.name} ({type(layer).__name__})")
        return _copy_layer(layer)

    clustered = keras.models.clone_model(model, clone_function=clone)
    if skipped:
        logger.warning("dc_keras.cluster_weights: not clustered (unsupported layer types): %s", ", ".join(skipped))
    return clustered
