"""Which weights of which Keras layers dc_keras compresses, shared by pruning, clustering and export.

One table so that every stage agrees on what a "compressible weight" is, and so that the paper's
per-kind defaults (conv: 8-bit codebook and 8-bit relative indices; fully-connected: 5 and 5) live in
one place. User layers opt in with the protocols documented in README ("Custom layers").
"""
from __future__ import annotations

from typing import Callable, Iterator, List, Optional, Tuple, Union

import keras

# Keras layer class -> (attribute names of the weights to compress, kind)
_SUPPORTED = (
    (keras.layers.Dense, ("kernel",), "fc"),
    (keras.layers.Conv1D, ("kernel",), "conv"),
    (keras.layers.Conv2D, ("kernel",), "conv"),
    (keras.layers.DepthwiseConv2D, ("kernel",), "conv"),
    (keras.layers.Conv2DTranspose, ("kernel",), "conv"),
    (keras.layers.Embedding, ("embeddings",), "embedding"),
)

# The paper's settings: 8 bits for conv layers, 5 bits for fully-connected ones (Section 3 / Table 2-3).
DEFAULT_BITS = {"conv": 8, "fc": 5, "embedding": 5, "custom": 8}
DEFAULT_INDEX_BITS = {"conv": 8, "fc": 5, "embedding": 5, "custom": 8}


def _match(layer) -> Tuple[Tuple[str, ...], str] | None:
    # Exact type first so that a subclass of a supported layer keeps its parent's behaviour
    # only when it does not define its own protocol method.
    for cls, attrs, kind in _SUPPORTED:
        if isinstance(layer, cls):
            return attrs, kind
    return None


def is_supported(layer, protocol: str = "get_prunable_weights") -> bool:
    """True when `layer` is a built-in supported type or implements `protocol` (a method name)."""
    return callable(getattr(layer, protocol, None)) or _match(layer) is not None


def layer_kind(layer) -> str:
    """"conv", "fc", "embedding" for built-in types, "custom" for layers that opt in by protocol."""
    matched = _match(layer)
    return matched[1] if matched else "custom"


def weight_attributes(layer) -> Tuple[str, ...]:
    """Attribute names of the compressible weights of a supported built-in layer (e.g. ("kernel",))."""
    matched = _match(layer)
    if matched is None:
        raise ValueError(
            f"layer {layer.name!r} of type {type(layer).__name__} is not supported by dc_keras: supported are "
            f"{', '.join(c.__name__ for c, _, _ in _SUPPORTED)}, or a layer that implements "
            "get_prunable_weights()/get_clusterable_weights()")
    return matched[0]


def compressible_weights(layer, protocol: str = "get_prunable_weights") -> List[Tuple[str, object]]:
    """(name, variable) pairs of the weights of `layer` to compress.

    A layer's own protocol method wins over the built-in table: `get_prunable_weights()` returns a list of
    variables (tfmot's PrunableLayer contract), `get_clusterable_weights()` returns (name, variable) pairs
    (tfmot's ClusterableLayer contract).
    """
    method = getattr(layer, protocol, None)
    if callable(method):
        found = method()
        pairs = []
        for item in found:
            if isinstance(item, tuple):
                pairs.append(item)
            else:
                pairs.append((item.path.split("/")[-1], item))
        return pairs
    return [(attr, getattr(layer, attr)) for attr in weight_attributes(layer)]


class WeightTransformWrapper(keras.layers.Wrapper):
    """A Wrapper that changes its inner layer's weight values only (pruning masks, shared centroids).

    Output shapes, output specs and Keras masks are therefore the inner layer's; the pruning and the
    clustering wrappers both inherit these forwards from here.
    """

    TRANSFORM = ""
    """"pruning" or "clustering": what the subclass does to the weights (see wrapper_kind)."""

    def compute_output_shape(self, input_shape):
        """Same as the inner layer's."""
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(self, *args, **kwargs):
        """Same as the inner layer's (which traces its call when it has no compute_output_shape)."""
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_mask(self, inputs, mask=None):
        """Delegates Keras masking (e.g. Embedding(mask_zero=True)) to the inner layer."""
        return self.layer.compute_mask(inputs, mask)


# ---- recognising wrappers and walking models ------------------------------------------------------------

# Wrappers of other libraries that dc_keras recognises without importing them: tfmot's pruning and
# clustering wrappers (tf_keras classes, not Keras 3 Wrappers). Matched by class name because importing
# tfmot just to test isinstance would pull tf_keras into every run that never uses it.
_FOREIGN_PRUNING_WRAPPERS = {"PruneLowMagnitude"}
_FOREIGN_CLUSTERING_WRAPPERS = {"ClusterWeights", "ClusterWeightsRNN", "ClusterWeightsMHA"}


def _foreign_wrapper_kind(layer) -> Optional[str]:
    """"pruning" / "clustering" for a tfmot (tf_keras) wrapper, else None. The one place wrappers are
    recognised by class name (see _FOREIGN_PRUNING_WRAPPERS for why)."""
    name = type(layer).__name__
    if name in _FOREIGN_PRUNING_WRAPPERS:
        return "pruning"
    if name in _FOREIGN_CLUSTERING_WRAPPERS:
        return "clustering"
    return None


def wrapper_kind(layer) -> Optional[str]:
    """"pruning" or "clustering" when `layer` is a pruning or clustering wrapper (dc_keras's by class,
    tfmot's by name), else None."""
    if isinstance(layer, WeightTransformWrapper):
        return layer.TRANSFORM
    return _foreign_wrapper_kind(layer)


def is_pruning_wrapper(layer) -> bool:
    """True for dc_keras's or tfmot's PruneLowMagnitude."""
    return wrapper_kind(layer) == "pruning"


def is_wrapper(layer) -> bool:
    """True for any Keras 3 Wrapper, and for a tf_keras layer holding an inner layer in `.layer` (tf_keras's
    and tfmot's wrappers, whose classes are not Keras 3's)."""
    if isinstance(layer, keras.layers.Wrapper):
        return True
    return not isinstance(layer, keras.layers.Layer) and getattr(layer, "layer", None) is not None


def _nested_layers(layer) -> list:
    """The layers of a nested model (Keras 3 or tf_keras: anything with a non-empty `layers` list), else []."""
    nested = getattr(layer, "layers", None)
    return list(nested) if isinstance(nested, (list, tuple)) and nested else []


def walk(model, containers: bool = False, into_wrappers: Union[bool, Callable[[object], bool]] = False,
         sublayers: bool = False) -> Iterator:
    """The layers of `model` (a Keras 3 or tf_keras model, or a layer), depth first in layer order, each once.

    The rule: nested models are descended into and yielded themselves only when `containers` is set;
    wrappers (is_wrapper) are yielded, and followed by their inner layer only when `into_wrappers` is set
    (True, or a predicate of the wrapper);
    every other layer is a leaf and yielded, followed by the layers it holds (Keras's `_layers`, e.g. a
    custom block) only when `sublayers` is set. `model` itself is not yielded.
    """
    seen = set()
    stack = list(reversed(_nested_layers(model) or (list(getattr(model, "_layers", [])) if sublayers else [])))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        nested = _nested_layers(layer)
        if is_wrapper(layer):
            yield layer
            inner = getattr(layer, "layer", None)
            descend = into_wrappers(layer) if callable(into_wrappers) else into_wrappers
            if descend and inner is not None:
                stack.append(inner)
        elif nested:
            if containers:
                yield layer
            stack.extend(reversed(nested))
        else:
            yield layer
            if sublayers:
                stack.extend(reversed(list(getattr(layer, "_layers", []) or [])))
