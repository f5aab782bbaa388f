"""The accuracy budget of a run: did the compressed model stay within `max_drop` points of the validated
dense model, and, when it did not, which layer to give back sparsity or bits (`--auto`).

The reported check uses the test set (the final numbers). The back-off decides on the validation split
only, so that the test set never chooses a model.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from dc_keras.pipeline.config import CompressionConfig, per_layer_value

# A back-off keeps this many times more weights of the layer it relaxes (94% sparse -> 91%).
KEEP_MORE = 1.5
# A back-off in quality mode lowers the layer's threshold factor by this factor.
QUALITY_STEP = 0.75
MAX_BITS = 8


def drop_points(dense: Optional[float], compressed: Optional[float]) -> Optional[float]:
    """How far `compressed` accuracy lies below `dense`, in percentage points (negative: above)."""
    if dense is None or compressed is None:
        return None
    return round(100.0 * (dense - compressed), 4)


def budget_check(dense_test: Optional[float], compressed_test: Optional[float], max_drop: float,
                 dense_validation: Optional[float] = None, compressed_validation: Optional[float] = None,
                 measured_on: str = "compressed.tflite") -> Dict[str, Any]:
    """The report's accuracy-budget entry: both models' validation and test accuracy, the test change in
    points, max_drop and whether it was met (None when not measured)."""
    drop = drop_points(dense_test, compressed_test)
    return {"dense_validation": dense_validation, "dense_test": dense_test,
            "compressed_validation": compressed_validation, "compressed_test": compressed_test,
            "compressed_measured_on": measured_on,
            "change_points": None if drop is None else 0.0 - drop, "max_drop_points": max_drop,
            "met": None if drop is None else bool(drop <= max_drop + 1e-9)}


def shortfall_message(check: Mapping[str, Any]) -> str:
    """One line naming the gap of a missed budget."""
    drop = -check["change_points"]
    return (f"compressed test accuracy {check['compressed_test']:.2%} is {drop:.2f} points below the validated "
            f"dense {check['dense_test']:.2%}; --max_drop allows {check['max_drop_points']:g} "
            f"(missed by {drop - check['max_drop_points']:.2f} points)")


def layer_drops(dense_model, validation, sparsity: Mapping[str, float], batch_size: int = 1000) -> Dict[str, float]:
    """layer name -> validation accuracy lost by magnitude-pruning that layer alone of `dense_model` to its
    `sparsity` (no retraining): the sensitivity analysis at each layer's own target."""
    from dc_keras import layer_registry
    from dc_keras.pipeline.keras_tools import compressible_layers
    from dc_keras.sensitivity import magnitude_prune, top1_accuracy

    x, y = validation
    baseline = top1_accuracy(dense_model, x, y, batch_size)
    drops = {}
    for layer in compressible_layers(dense_model):
        target = sparsity.get(layer.name, 0.0)
        if target <= 0:
            continue
        variables = [v for _, v in layer_registry.compressible_weights(layer)]
        originals = [np.array(v.numpy()) for v in variables]
        try:
            for variable, original in zip(variables, originals):
                variable.assign(magnitude_prune(original, target))
            drops[layer.name] = baseline - top1_accuracy(dense_model, x, y, batch_size)
        finally:
            for variable, original in zip(variables, originals):
                variable.assign(original)
    return drops


def _bits_of(config: CompressionConfig, layer) -> int:
    from dc_keras import layer_registry

    return per_layer_value(config.bits, layer.name, layer_registry.DEFAULT_BITS[layer_registry.layer_kind(layer)])


def relax(config: CompressionConfig, model, drops: Mapping[str, float]) -> Tuple[Optional[CompressionConfig], str]:
    """(config with the most sensitive relaxable layer backed off, what changed), or (None, why not).

    The layer with the largest drop in `drops` whose sparsity or bits can still give: it keeps KEEP_MORE
    times its surviving weights (quality mode: its factor times QUALITY_STEP) and gets one more codebook bit
    (up to 8; a layer with bits 0 stays unclustered).
    """
    from dc_keras.pipeline.keras_tools import compressible_layers

    layers = {layer.name: layer for layer in compressible_layers(model)}
    for name in sorted(drops, key=lambda n: -drops[n]):
        changes, said = {}, []
        if config.quality is not None:
            quality = per_layer_value(config.quality, name)
            if quality:
                changes["quality"] = {**_as_dict(config.quality, layers), name: quality * QUALITY_STEP}
                said.append(f"quality {quality:.3g} -> {quality * QUALITY_STEP:.3g}")
        else:
            sparsity = per_layer_value(config.sparsity, name, 0.0)
            if sparsity > 0:
                relaxed = max(0.0, round(1.0 - KEEP_MORE * (1.0 - sparsity), 4))
                changes["sparsity"] = {**_as_dict(config.sparsity, layers), name: relaxed}
                said.append(f"sparsity {sparsity:.1%} -> {relaxed:.1%}")
        bits = _bits_of(config, layers[name])
        if 0 < bits < MAX_BITS:
            changes["bits"] = {**{n: _bits_of(config, layer) for n, layer in layers.items()}, name: bits + 1}
            said.append(f"bits {bits} -> {bits + 1}")
        if changes:
            return config.replace(**changes), f"{name} (validation drop {drops[name]:.2%} alone): " + ", ".join(said)
    return None, "no layer left to relax"


def _as_dict(value, layers) -> Dict[str, Any]:
    """A per-layer value as an explicit {layer: value} dict over `layers` (missing layers left out)."""
    if isinstance(value, Mapping):
        return dict(value)
    return {name: value for name in layers}
