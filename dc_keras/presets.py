"""The built-in reference networks by name and the compression settings dc-compress uses for each.

Kept apart from models.py so that the command line can list and validate names without importing Keras.
"""
from __future__ import annotations

BUILTIN_MODELS = ("lenet300", "lenet5")
"""Names accepted by dc-compress --model besides a saved model's path."""

# Settings of the built-in models, used unless the command line or --config says otherwise. They go a
# little past the paper (a few points more sparsity, 4-bit codebooks for the large FC layers, longer
# retraining) because on Fashion-MNIST that still keeps test accuracy within 0.5 points of the dense
# baseline while the file shrinks by a further ~25% (README, "Results", has the measured runs).
BUILTIN_PRESETS = {
    "lenet300": {"sparsity": {"ip1": 0.94, "ip2": 0.92, "ip3": 0.75}, "bits": {"ip1": 4, "ip2": 4, "ip3": 5},
                 "epochs": 15, "prune_epochs": 15, "cluster_epochs": 5, "validation_fraction": 0.0},
    "lenet5": {"sparsity": {"conv1": 0.4, "conv2": 0.9, "ip1": 0.95, "ip2": 0.85},
               "bits": {"conv1": 6, "conv2": 5, "ip1": 4, "ip2": 4},
               "epochs": 6, "prune_epochs": 6, "cluster_epochs": 2},
}
"""model name -> CompressionConfig fields for it."""


def builtin_model(name: str):
    """A fresh, untrained built-in model by name (one of BUILTIN_MODELS); ValueError for another name."""
    from dc_keras import models

    builders = {"lenet300": models.lenet_300_100, "lenet5": models.lenet5}
    if name not in builders:
        raise ValueError(f"no built-in model {name!r}: known are {', '.join(BUILTIN_MODELS)}")
    return builders[name]()
