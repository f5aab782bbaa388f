"""The built-in reference networks by name and the compression settings dc-compress uses for each.

Kept apart from models.py so that the command line can list and validate names without importing Keras.
"""
from __future__ import annotations

import math

BUILTIN_MODELS = ("lenet300", "lenet5")
"""Names accepted by dc-compress --model besides a saved model's path."""

# Settings of the built-in models, used unless the command line or --config says otherwise. They go past
# the paper (more sparsity, longer retraining), chosen by validation accuracy against the dense baseline;
# README, "Results", and docs/pipeline.md have the measured runs and their test-accuracy change.
# LeNet-300-100 prunes with regrowth over 60 epochs in 6 iterations: from one saved dense model (89.05% test)
# 60 epochs gave +0.20 / +0.26 points at 60.1x / 58.3x where 30 gave -0.07 / -0.01 (and 15 without
# regrowth -1.25 / -1.16 at 53x). Its bit_budget is 0.002: at 0.005 the allocation went down to 2/2/2 bits
# and clustering then cost up to 0.4 test points. LeNet-5 keeps 55/15/2.5/12% of conv1/conv2/ip1/ip2 at
# fixed 5/3/2/4 bits, prunes with regrowth, 24 epochs over 6 iterations: from one saved dense model (91.13%)
# 93.7x (114.4x weights alone) at -0.47, where 4/3 bits for conv2/ip1 gave 88.4x at -0.78 and a 1-bit ip1
# 100.3x at -0.76 (clustering alone -0.37). In whole runs it ends at 90.3-90.6% test each time while the
# dense baseline draws 90.7-91.3%, so the 0.5-point bound was met in about half of them; 48 retraining
# epochs or 81% of conv2 pruned did not do better. Without regrowth at 5/4/3/4 bits: 86.1x, whole runs
# -0.56 to -0.91. `bits` is each layer's largest codebook width; with `bit_budget` the pipeline lowers it
# per layer (dc_keras.bit_allocation) while the accuracy before fine-tuning stays within that budget.
BUILTIN_PRESETS = {
    "lenet300": {"sparsity": {"ip1": 0.945, "ip2": 0.925, "ip3": 0.75}, "bits": {"ip1": 4, "ip2": 4, "ip3": 5},
                 "bit_budget": 0.002, "epochs": 15, "prune_epochs": 60, "prune_iterations": 6, "regrowth": True,
                 "cluster_epochs": 5},
    "lenet5": {"sparsity": {"conv1": 0.45, "conv2": 0.85, "ip1": 0.975, "ip2": 0.88},
               "bits": {"conv1": 5, "conv2": 3, "ip1": 2, "ip2": 4},
               "epochs": 6, "prune_epochs": 24, "prune_iterations": 6, "regrowth": True, "cluster_epochs": 2},
}
"""model name -> CompressionConfig fields for it."""


def builtin_model(name: str):
    """A fresh, untrained built-in model by name (one of BUILTIN_MODELS); ValueError for another name."""
    from dc_keras import models

    builders = {"lenet300": models.lenet_300_100, "lenet5": models.lenet5}
    if name not in builders:
        raise ValueError(f"no built-in model {name!r}: known are {', '.join(BUILTIN_MODELS)}")
    return builders[name]()


# Targets for a model without a preset, by layer kind, in the spirit of the paper's Tables 1-4: fully
# connected layers lose ~90% (AlexNet/VGG FC 91-96%, LeNet 92%), convolutions far less (AlexNet conv 63-70%),
# depthwise convolutions, with 9 weights per channel, less again; the first layer, which sees raw inputs,
# and the last, which every class reads, are the most sensitive (LeNet-5 conv1 34%, AlexNet fc8 75%).
DEFAULT_SPARSITY_BY_KIND = {"fc": 0.9, "conv": 0.65, "depthwise": 0.35, "embedding": 0.8}
FIRST_LAYER_CAP = 0.5
LAST_LAYER_CAP = 0.75
SMALL_LAYER_WEIGHTS = 1024
"""Layers with fewer weights than this are capped at FIRST_LAYER_CAP: they cost little and prune poorly."""


def default_sparsity(layers) -> tuple:
    """Per-layer sparsity targets for a model without a preset: ({layer name: sparsity}, [why, per layer]).

    `layers` are the model's compressible layers in order (dc_keras.pipeline.compressible_layers).
    """
    import keras

    from dc_keras import layer_registry

    targets, reasons = {}, []
    for position, layer in enumerate(layers):
        kind = layer_registry.layer_kind(layer)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kind = "depthwise"
        target = DEFAULT_SPARSITY_BY_KIND.get(kind, DEFAULT_SPARSITY_BY_KIND["conv"])
        why = f"{kind} {target:.0%}"
        weights = sum(math.prod(w.shape) for _, w in layer_registry.compressible_weights(layer))
        for applies, cap, label in ((position == 0, FIRST_LAYER_CAP, "first layer"),
                                    (position == len(layers) - 1, LAST_LAYER_CAP, "last layer"),
                                    (weights < SMALL_LAYER_WEIGHTS, FIRST_LAYER_CAP, f"{weights} weights")):
            if applies and target > cap:
                target, why = cap, f"{why}, {label}: at most {cap:.0%}"
        targets[layer.name] = target
        reasons.append(f"{layer.name}: {target:.0%} ({why})")
    return targets, reasons
