"""``strip_pruning``: the plain Keras model that a pruned model stands for, zeros baked in."""
from __future__ import annotations

import keras

from dc_keras.pruning.wrapper import PruneLowMagnitude, _is_functional, read_value

__all__ = ["strip_pruning"]


def _unwrapped_copy(wrapper: PruneLowMagnitude):
    """A new instance of the wrapper's inner layer (same config), plus the weights it must receive once built.

    A copy rather than the inner object itself: the inner variables carry the mask constraint, and the
    pruned model may go on training after it has been stripped.
    """
    inner = wrapper.layer
    masked = {id(w): read_value(w) * read_value(m).astype(read_value(w).dtype)
              for w, m, _ in wrapper.pruning_vars}
    values = [masked[id(v)] if id(v) in masked else read_value(v)
              for v in inner.weights]
    copy = type(inner).from_config(inner.get_config())
    return copy, values


def strip_pruning(model):
    """Return ``model`` without its PruneLowMagnitude wrappers, each pruned weight set to ``weight * mask``.

    Works on Sequential and functional models (nested ones included) and on a single wrapper. Like tfmot, the
    result shares the layers that were not wrapped with ``model``; the formerly wrapped layers are fresh
    copies of the inner layers with the masked weights. Compile the result before training or evaluating.
    """
    if isinstance(model, PruneLowMagnitude):
        copy, values = _unwrapped_copy(model)
        build_config = model.layer.get_build_config() if model.layer.built else None
        if build_config:
            copy.build_from_config(build_config)
            copy.set_weights(values)
        return copy
    if not isinstance(model, keras.Model):
        raise ValueError(f"strip_pruning expects a keras Model or a PruneLowMagnitude layer, got {model!r}")
    if not isinstance(model, keras.Sequential) and not _is_functional(model):
        raise ValueError(f"strip_pruning accepts Sequential and functional models; {model.name!r} is subclassed")

    pending = []

    def clone_function(layer):
        if isinstance(layer, PruneLowMagnitude):
            copy, values = _unwrapped_copy(layer)
            pending.append((copy, values))
            return copy
        return layer

    stripped = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    # clone_model has called each copy on symbolic inputs, so they are built and can take their weights.
    for copy, values in pending:
        copy.set_weights(values)
    return stripped
