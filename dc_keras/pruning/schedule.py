"""Pruning schedules: when masks are recomputed and how many weights they keep.

A schedule answers two questions for the pruning wrapper, both inside the compiled training step:

* ``should_prune(step)``: is ``step`` a mask-update step? (tfmot's rule: ``begin_step <= step <= end_step``,
  or no end when ``end_step == -1``, and ``(step - begin_step) % frequency == 0``.)
* ``compute_mask(step, weight)``: the new ``(threshold, mask)`` for one weight tensor.

``PolynomialDecay`` and ``ConstantSparsity`` keep tfmot's names, arguments, validation and values
(``schedule(step)`` returns ``(should_prune, sparsity)`` exactly like tfmot's), so tfmot users switch by
changing the import; tfmot's own objects are accepted too and converted by :func:`as_schedule`.
``SensitivityThreshold`` is the Deep Compression paper's rule: prune the weights whose magnitude is below
``quality * std(layer weights)``, with a per-layer ``quality``.

Custom schedules subclass :class:`PruningSchedule`, implement ``__call__`` (sparsity schedules) or
``compute_mask`` and ``get_config``, and register with ``keras.saving.register_keras_serializable`` so that
saved models load.
"""
from __future__ import annotations

import math
import numbers
from typing import Mapping, Optional, Tuple

import keras
import tensorflow as tf

__all__ = ["PruningSchedule", "PolynomialDecay", "ConstantSparsity", "SensitivityThreshold", "as_schedule"]


def _validate_step(begin_step, end_step, frequency, allow_no_end: bool, owner: str) -> None:
    for name, value in (("begin_step", begin_step), ("end_step", end_step), ("frequency", frequency)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{owner}: {name} must be an integer, got {value!r}")
    if begin_step < 0:
        raise ValueError(f"{owner}: begin_step must be >= 0, got {begin_step}")
    if end_step == -1:
        if not allow_no_end:
            # A decay needs an end: there is no "final" sparsity to reach otherwise.
            raise ValueError(f"{owner}: end_step cannot be -1 (the decay needs an end step)")
    elif end_step < 0:
        raise ValueError(f"{owner}: end_step must be -1 or >= 0, got {end_step}")
    elif end_step < begin_step:
        raise ValueError(f"{owner}: end_step ({end_step}) must be >= begin_step ({begin_step})")
    if frequency <= 0:
        raise ValueError(f"{owner}: frequency must be > 0, got {frequency}")


def _validate_sparsity(value, name: str, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        # 1.0 would remove every weight of the layer, which no retraining recovers from.
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value!r}")


class PruningSchedule:
    """Base class of dc_keras pruning schedules (tfmot's ``PruningSchedule`` contract plus ``compute_mask``).

    Subclasses set ``begin_step``, ``end_step`` and ``frequency`` and implement ``__call__(step)`` returning
    ``(should_prune, sparsity)`` as TensorFlow tensors, or override :meth:`compute_mask` for rules that are
    not a target sparsity.
    """

    begin_step: int = 0
    end_step: int = -1
    frequency: int = 100

    def should_prune(self, step):
        """Boolean tensor: is ``step`` (int64 tensor) a step at which masks are recomputed?"""
        step = tf.cast(step, tf.int64)
        in_range = tf.math.logical_and(
            tf.math.greater_equal(step, self.begin_step),
            # end_step == -1 means "keep pruning to the end of training", as in tfmot.
            tf.math.logical_or(tf.math.less_equal(step, self.end_step), tf.math.less(self.end_step, 0)))
        on_turn = tf.math.equal(tf.math.floormod(step - self.begin_step, self.frequency), 0)
        return tf.math.logical_and(in_range, on_turn)

    def __call__(self, step):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(step) -> (should_prune, sparsity)")

    def compute_mask(self, step, weight) -> Tuple[tf.Tensor, tf.Tensor]:
        """New ``(threshold, mask)`` for ``weight`` at ``step``: keep the ``round(n * (1 - sparsity))`` largest
        magnitudes (at least one).

        Ties are broken by position so that the mask keeps exactly that many weights: tfmot's ``>=``
        threshold keeps every tied weight, which leaves already-zeroed weights "kept" and misses the target.
        """
        sparsity = self(step)[1]
        abs_weight = tf.math.abs(tf.convert_to_tensor(weight))
        flat = tf.reshape(abs_weight, [-1])
        n = tf.size(flat)
        k = tf.cast(tf.math.maximum(tf.math.round(tf.cast(n, tf.float32) * (1.0 - sparsity)), 1.0), tf.int32)
        values, indices = tf.math.top_k(flat, k=k, sorted=True)
        threshold = values[k - 1]
        mask = tf.scatter_nd(tf.expand_dims(indices, 1), tf.ones_like(values), tf.shape(flat, out_type=tf.int32))
        return tf.cast(threshold, abs_weight.dtype), tf.reshape(tf.cast(mask, abs_weight.dtype), tf.shape(weight))

    def compute_block_mask(self, step, weight, layout) -> Tuple[tf.Tensor, tf.Tensor]:
        """New ``(threshold, mask)`` for block pruning: ``layout`` (a ``dc_keras.pruning.blocks.BlockLayout``)
        scores the blocks of ``weight``; the highest-scoring blocks are kept while the kept weights stay
        within ``max(round(n * (1 - sparsity)), 1)`` (at least one block). The threshold is the lowest kept
        block score."""
        return layout.keep_top(layout.pool(weight), self(step)[1])

    def supports_blocks(self) -> bool:
        """Whether :meth:`compute_block_mask` applies to this schedule: not when a subclass replaced
        :meth:`compute_mask` with its own rule but left the sparsity-based block rule in place."""
        own_mask = type(self).compute_mask is not PruningSchedule.compute_mask
        own_block_mask = type(self).compute_block_mask is not PruningSchedule.compute_block_mask
        return own_block_mask or not own_mask

    def for_layer(self, layer_name: str) -> "PruningSchedule":
        """The schedule to use for the layer called ``layer_name`` (itself unless it has per-layer settings)."""
        return self

    def get_config(self) -> dict:
        """Constructor arguments, so that ``type(self)(**config)`` rebuilds the schedule."""
        raise NotImplementedError(f"{type(self).__name__} must implement get_config()")

    @classmethod
    def from_config(cls, config: dict) -> "PruningSchedule":
        """Inverse of :meth:`get_config`."""
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="dc_keras")
class ConstantSparsity(PruningSchedule):
    """Prune to ``target_sparsity`` at every ``frequency``-th step from ``begin_step`` to ``end_step``
    (``-1``: to the end of training). Same arguments and values as ``tfmot.sparsity.keras.ConstantSparsity``.
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        _validate_step(begin_step, end_step, frequency, True, "ConstantSparsity")
        _validate_sparsity(target_sparsity, "target_sparsity", "ConstantSparsity")
        self.target_sparsity = float(target_sparsity)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)

    def __call__(self, step):
        """``(should_prune, sparsity)`` as tensors, like tfmot's schedule."""
        return self.should_prune(step), tf.constant(self.target_sparsity, dtype=tf.float32)

    def get_config(self):
        """Constructor arguments."""
        return {"target_sparsity": self.target_sparsity, "begin_step": self.begin_step,
                "end_step": self.end_step, "frequency": self.frequency}


@keras.saving.register_keras_serializable(package="dc_keras")
class PolynomialDecay(PruningSchedule):
    """Sparsity rises from ``initial_sparsity`` to ``final_sparsity`` between ``begin_step`` and ``end_step``:
    ``final + (initial - final) * (1 - p) ** power`` with ``p = (step - begin) / (end - begin)`` clipped to
    [0, 1] (Zhu & Gupta 2017). Same arguments and values as ``tfmot.sparsity.keras.PolynomialDecay``.
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        _validate_step(begin_step, end_step, frequency, False, "PolynomialDecay")
        if end_step == begin_step:
            # tfmot accepts this and then divides by zero; a NaN sparsity would silently break pruning.
            raise ValueError(f"PolynomialDecay: end_step ({end_step}) must be > begin_step ({begin_step})")
        _validate_sparsity(initial_sparsity, "initial_sparsity", "PolynomialDecay")
        _validate_sparsity(final_sparsity, "final_sparsity", "PolynomialDecay")
        if isinstance(power, bool) or not isinstance(power, numbers.Real) or not math.isfinite(power) or power <= 0:
            raise ValueError(f"PolynomialDecay: power must be a finite number > 0, got {power!r}")
        self.initial_sparsity = float(initial_sparsity)
        self.final_sparsity = float(final_sparsity)
        self.power = int(power) if isinstance(power, numbers.Integral) else float(power)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)

    def __call__(self, step):
        """``(should_prune, sparsity)`` as tensors; the arithmetic follows tfmot's op for op (float32)."""
        p = tf.math.divide(tf.cast(tf.cast(step, tf.int64) - self.begin_step, tf.float32),
                           float(self.end_step - self.begin_step))
        p = tf.math.minimum(1.0, tf.math.maximum(0.0, p))
        sparsity = tf.math.add(
            tf.math.multiply(self.initial_sparsity - self.final_sparsity, tf.math.pow(1 - p, self.power)),
            self.final_sparsity)
        return self.should_prune(step), sparsity

    def get_config(self):
        """Constructor arguments."""
        return {"initial_sparsity": self.initial_sparsity, "final_sparsity": self.final_sparsity,
                "begin_step": self.begin_step, "end_step": self.end_step, "power": self.power,
                "frequency": self.frequency}


@keras.saving.register_keras_serializable(package="dc_keras")
class SensitivityThreshold(PruningSchedule):
    """The paper's rule: at each update step, prune the weights with ``|w| < quality * std(w)``.

    ``std`` is taken over all the weights of the layer's tensor at the update step (pruned ones are zero and
    count), so repeating the rule during retraining prunes a little more each time and then settles.

    Args:
        quality: the quality parameter (> 0), applied to every layer without an override.
        begin_step, end_step, frequency: when to recompute masks, as in :class:`ConstantSparsity`.
            The default (``frequency=1`` would also work) prunes once at ``begin_step`` and every 100 steps
            after it.
        per_layer: optional ``{layer name: quality}`` overrides (the paper keeps 8% of LeNet's first FC
            layer but 26% of its last).
    """

    def __init__(self, quality, begin_step=0, end_step=-1, frequency=100,
                 per_layer: Optional[Mapping[str, float]] = None):
        _validate_step(begin_step, end_step, frequency, True, "SensitivityThreshold")
        self._check_quality(quality, "quality")
        per_layer = dict(per_layer or {})
        for name, value in per_layer.items():
            if not isinstance(name, str):
                raise ValueError(f"SensitivityThreshold: per_layer keys must be layer names, got {name!r}")
            self._check_quality(value, f"per_layer[{name!r}]")
        self.quality = float(quality)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)
        self.per_layer = {k: float(v) for k, v in per_layer.items()}

    @staticmethod
    def _check_quality(value, name):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"SensitivityThreshold: {name} must be a finite number > 0, got {value!r}")

    def __call__(self, step):
        """``(should_prune, quality)``: this rule has no target sparsity, the second item is the quality."""
        return self.should_prune(step), tf.constant(self.quality, dtype=tf.float32)

    def compute_mask(self, step, weight):
        """Threshold ``quality * std(weight)``; the mask keeps ``|w| >= threshold``."""
        weight = tf.convert_to_tensor(weight)
        abs_weight = tf.math.abs(weight)
        threshold = tf.cast(self.quality, weight.dtype) * tf.math.reduce_std(weight)
        return threshold, tf.cast(abs_weight >= threshold, weight.dtype)

    def compute_block_mask(self, step, weight, layout):
        """Threshold ``quality * std(weight)`` (over the weights, as unstructured); the mask keeps the blocks
        whose score (``layout``'s mean or max of ``|w|``) is at least the threshold."""
        weight = tf.convert_to_tensor(weight)
        threshold = tf.cast(self.quality, weight.dtype) * tf.math.reduce_std(weight)
        return threshold, tf.cast(layout.keep_above(layout.pool(weight), threshold), weight.dtype)

    def for_layer(self, layer_name):
        """A copy with this layer's quality and no overrides (what a single wrapper stores)."""
        if layer_name in self.per_layer:
            return SensitivityThreshold(self.per_layer[layer_name], self.begin_step, self.end_step, self.frequency)
        if not self.per_layer:
            return self
        return SensitivityThreshold(self.quality, self.begin_step, self.end_step, self.frequency)

    def get_config(self):
        """Constructor arguments."""
        return {"quality": self.quality, "begin_step": self.begin_step, "end_step": self.end_step,
                "frequency": self.frequency, "per_layer": dict(self.per_layer)}


# tfmot class name -> our class; their configs use the same argument names.
_TFMOT_EQUIVALENTS = {"PolynomialDecay": PolynomialDecay, "ConstantSparsity": ConstantSparsity}


def as_schedule(obj) -> PruningSchedule:
    """Return a dc_keras schedule for ``obj``.

    Accepts a dc_keras :class:`PruningSchedule`, tfmot's ``PolynomialDecay`` / ``ConstantSparsity`` (converted
    from their ``get_config()``, so their values are unchanged), or a serialized schedule dict (as found in
    a saved model's config). Anything else raises TypeError naming what is accepted.
    """
    if isinstance(obj, PruningSchedule):
        return obj
    cls_name = type(obj).__name__
    module = type(obj).__module__ or ""
    if module.startswith("tensorflow_model_optimization") and cls_name in _TFMOT_EQUIVALENTS:
        config = obj.get_config()
        return _TFMOT_EQUIVALENTS[cls_name](**config["config"])
    if isinstance(obj, dict) and "class_name" in obj:
        restored = keras.saving.deserialize_keras_object(obj)
        if isinstance(restored, PruningSchedule):
            return restored
    raise TypeError(
        f"pruning_schedule must be a dc_keras schedule (PolynomialDecay, ConstantSparsity, SensitivityThreshold "
        f"or a PruningSchedule subclass) or tfmot's PolynomialDecay/ConstantSparsity, got {obj!r}")
