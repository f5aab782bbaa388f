"""Remove clustering wrappers: plain Keras layers whose weights hold exactly the shared values.

After `strip_clustering` each clustered weight contains at most k distinct nonzero values (k = the layer's
number of clusters, at most 2**bits) plus exact zeros where weights were pruned. The values are the float32
centroids themselves, gathered in NumPy — no arithmetic touches them on the way, so the exporter can
rebuild the codebook from the distinct values bit for bit.
"""
from __future__ import annotations

import keras

from dc_keras.clustering.wrapper import ClusterWeights, _copy_layer

__all__ = ["strip_clustering"]


def _plain_copy(wrapper: ClusterWeights):
    """A new layer like `wrapper.layer`, trainable as usual, whose clustered weights hold the shared values."""
    inner = wrapper.layer
    copy = inner.__class__.from_config(inner.get_config())
    build_config = inner.get_build_config()
    if build_config is not None:
        copy.build_from_config(build_config)
    shared = wrapper.get_clustered_weights()
    replaced = {id(variable): shared[name] for name, variable, _, _ in wrapper._clustered}
    copy.set_weights([replaced[id(v)] if id(v) in replaced else v.numpy()
                      for v in inner.weights])
    return copy


def strip_clustering(model):
    """Replace every `ClusterWeights` wrapper of `model` by its layer holding the clustered weights.

    Args:
      model: a Sequential or functional `keras.Model` (typically from `cluster_weights` after fine-tuning),
        or a single `ClusterWeights` layer.

    Returns:
      A new model (or layer) of plain Keras layers; the input model is not modified. Layers that were not
      clustered are copied with their weights.
    """
    if isinstance(model, ClusterWeights):
        return _plain_copy(model)
    if not isinstance(model, keras.Model):
        raise ValueError(f"strip_clustering expects a keras.Model or a ClusterWeights layer, got "
                         f"{type(model).__name__}")
    from keras.src.models.functional import Functional

    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(f"model {model.name!r} is a subclassed model: strip_clustering supports Sequential "
                         "and functional models; call strip_clustering(wrapper) on each wrapped layer instead")

    def clone(layer):
        return _plain_copy(layer) if isinstance(layer, ClusterWeights) else _copy_layer(layer)

    return keras.models.clone_model(model, clone_function=clone)
