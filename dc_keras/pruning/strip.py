"""``strip_pruning``: the plain Keras model that a pruned model stands for, zeros baked in; ``unwrap_dense``:
the same without the masks applied (the dense values that regrowth wrappers train)."""
from __future__ import annotations

import keras

from dc_keras.pruning.wrapper import PruneLowMagnitude, _is_functional, read_value

__all__ = ["strip_pruning", "unwrap_dense"]


def _unwrapped_copy(wrapper: PruneLowMagnitude, masked_values: bool = True):
    """A new instance of the wrapper's inner layer (same config), plus the weights it must receive once built
    (``weight * mask``, or the variables as they are when not `masked_values`).

    A copy rather than the inner object itself: the inner variables carry the mask constraint, and the
    pruned model may go on training after it has been stripped.
    """
    inner = wrapper.layer
    masked = {id(w): read_value(w) * read_value(m).astype(read_value(w).dtype) if masked_values else read_value(w)
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
    Wrappers with ``regrowth=True`` are stripped the same way: their dense values become ``weight * mask``.
    """
    return _strip(model, True, "strip_pruning")


def unwrap_dense(model):
    """``model`` without its PruneLowMagnitude wrappers, each pruned weight keeping its variable's value.

    For regrowth wrappers this is the dense (shadow) values, pruned positions included, so that a later
    pruning round can rank them again (the pipeline's regrowth iterations); for wrappers without regrowth
    the variables already hold ``weight * mask``. Same model forms and sharing as :func:`strip_pruning`.
    """
    return _strip(model, False, "unwrap_dense")


def _strip(model, masked_values: bool, caller: str):
    if isinstance(model, PruneLowMagnitude):
        copy, values = _unwrapped_copy(model, masked_values)
        build_config = model.layer.get_build_config() if model.layer.built else None
        if build_config:
            copy.build_from_config(build_config)
            copy.set_weights(values)
        return copy
    if not isinstance(model, keras.Model):
        raise ValueError(f"{caller} expects a keras Model or a PruneLowMagnitude layer, got {model!r}")
    if not isinstance(model, keras.Sequential) and not _is_functional(model):
        raise ValueError(f"{caller} accepts Sequential and functional models; {model.name!r} is subclassed")

    pending = []

    def clone_function(layer):
        if isinstance(layer, PruneLowMagnitude):
            copy, values = _unwrapped_copy(layer, masked_values)
            pending.append((copy, values))
            return copy
        return layer

    stripped = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    # clone_model has called each copy on symbolic inputs, so they are built and can take their weights.
    for copy, values in pending:
        copy.set_weights(values)
    return stripped
