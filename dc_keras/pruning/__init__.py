"""Stage 1 of Deep Compression: magnitude pruning with retraining, inside ``model.fit``.

Public names (also available from ``dc_keras`` itself): ``prune_low_magnitude``, ``PruneLowMagnitude``,
``PrunableLayer``, ``strip_pruning`` and the schedules ``PolynomialDecay``, ``ConstantSparsity`` and
``SensitivityThreshold``. The callbacks live in ``dc_keras.callbacks``.
"""
from dc_keras.pruning.schedule import (ConstantSparsity, PolynomialDecay, PruningSchedule,  # noqa: F401
                                       SensitivityThreshold)
from dc_keras.pruning.wrapper import (PrunableLayer, PruneLowMagnitude, collect_prunable_layers,  # noqa: F401
                                      prune_low_magnitude)

__all__ = ["ConstantSparsity", "PolynomialDecay", "PruningSchedule", "SensitivityThreshold", "PrunableLayer",
           "PruneLowMagnitude", "collect_prunable_layers", "prune_low_magnitude", "strip_pruning"]


def __getattr__(name):
    # strip.py imports the wrapper; loaded on first use to keep this package's import minimal.
    if name == "strip_pruning":
        from dc_keras.pruning.strip import strip_pruning

        return strip_pruning
    raise AttributeError(f"module 'dc_keras.pruning' has no attribute {name!r}")
