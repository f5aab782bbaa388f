"""Magnitude pruning for Keras 3 layers and models: ``prune_low_magnitude`` and its ``PruneLowMagnitude`` wrapper.

How a wrapped layer keeps its pruned weights at exactly zero (the default; see "Regrowth" below for the
alternative):

* The masks are applied to the variables when they change (inside the training step, before the forward
  pass), and each prunable variable gets a constraint ``w -> constraint(w) * mask`` that Keras optimizers
  apply after every update, so neither gradients nor momentum can revive a pruned weight: the variable
  holds exactly ``weight * mask`` after every training step, not only at epoch ends.
* Training calls therefore run the inner layer on its variables directly (no per-step multiply), while
  inference calls run it with ``weight * mask`` substituted (a ``keras.StatelessScope`` mapping), so that
  weights set from outside (``set_weights``, custom update rules) never leak through a pruned position.
  ``UpdatePruningStep`` also re-applies the masks when training begins and at each epoch end.
* Masks, thresholds and the step counter are non-trainable variables of the wrapper, so ``model.save`` /
  ``load_model`` restore them and resumed training continues the schedule. They are sync-on-read under
  ``tf.distribute``: each replica computes the same mask from the same mirrored weights, which needs no
  cross-replica synchronisation inside the training step's ``tf.cond``.
* The step counter is advanced in the compiled training step (once per training call, like tfmot 0.8), and
  masks are recomputed under ``tf.cond`` only on the schedule's update steps, so between updates the cost is
  the constraint's multiply per pruned weight and a few scalar ops.

Regrowth (``regrowth=True``; Dynamic Network Surgery, Guo et al. 2016, and Dynamic Pruning with Feedback,
Lin et al. 2020): a weight pruned by a mask computed early is not necessarily unimportant, and at high
sparsity those early mistakes cost accuracy when they can never be undone. With regrowth the pruned
variables hold dense values (``apply_masks`` leaves them dense; their constraint only clips a pruned weight to
the mask threshold, see ``_RegrowthConstraint``), every call runs the inner
layer on ``w + stop_gradient(w * m - w)``, which equals ``w * m`` in value (inference, validation and the
training loss see the sparse model) while the gradient reaches every ``w``, pruned ones included (the
straight-through estimator), and each mask update ranks the dense ``|w|``. A pruned weight whose dense value
grows back past the threshold is therefore revived at the next update. ``strip_pruning`` bakes ``w * m``.

This module is imported when ``dc_keras`` is, to register the wrapper for ``load_model``; it imports only
Keras, TensorFlow and dc_keras modules without further side effects.
"""
from __future__ import annotations

import logging
from typing import Iterator, List, Mapping, Optional

import keras
import numpy as np
import tensorflow as tf

from dc_keras import layer_registry
from dc_keras.pruning.blocks import UNSTRUCTURED, BlockLayout, block_refusal, check_block_size, check_pooling
from dc_keras.pruning.schedule import ConstantSparsity, as_schedule

__all__ = ["PrunableLayer", "PruneLowMagnitude", "prune_low_magnitude", "collect_prunable_layers"]

_LOG = logging.getLogger("dc_keras")

_CALLBACK_ERROR = (
    "dc_keras pruning: the pruning step of this layer was never initialised, so dc_keras.callbacks."
    "UpdatePruningStep() is missing: pass callbacks=[dc_keras.callbacks.UpdatePruningStep()] to model.fit "
    "(in a custom training loop, call callback.set_model(model) and callback.on_train_begin() first).")


class PrunableLayer:
    """Interface for custom layers that choose which of their weights are pruned (tfmot's ``PrunableLayer``).

    Implement ``get_prunable_weights()`` returning the list of variables to prune (usually kernels, not
    biases). Inheriting from this class is optional: any layer with that method is prunable.
    """

    def get_prunable_weights(self):
        """List of the layer's variables to prune; must be overridden."""
        raise NotImplementedError(
            f"{type(self).__name__} inherits dc_keras.PrunableLayer and must implement get_prunable_weights()")


class _MaskConstraint:
    """Variable constraint applied by Keras optimizers after each update: the layer's own constraint (if
    any), then the mask. Not serialised: the wrapper re-creates it when it is built."""

    def __init__(self, mask, original):
        self.mask = mask
        self.original = original

    def __call__(self, weight):
        if self.original is not None:
            weight = self.original(weight)
        return keras.ops.multiply(weight, keras.ops.cast(self.mask, weight.dtype))


class _RegrowthConstraint:
    """Variable constraint of a regrowth wrapper: the layer's own constraint (if any), then every pruned
    weight's dense value clipped to [-threshold, threshold]. Adam moves each weight by about the learning
    rate per step whatever its gradient's scale, so without the clip a pruned weight drifts for hundreds of
    steps and re-enters at a magnitude that wrecks the layer; clipped, it re-enters at the smallest kept
    magnitude and grows from there. Not serialised: the wrapper re-creates it when it is built."""

    def __init__(self, mask, threshold, original):
        self.mask = mask
        self.threshold = threshold
        self.original = original

    def __call__(self, weight):
        if self.original is not None:
            weight = self.original(weight)
        limit = keras.ops.cast(self.threshold, weight.dtype)
        clipped = keras.ops.clip(weight, -limit, limit)
        return keras.ops.where(keras.ops.cast(self.mask, "bool"), weight, clipped)


@keras.saving.register_keras_serializable(package="dc_keras")
class PruneLowMagnitude(layer_registry.WeightTransformWrapper):
    """Wraps a layer and prunes its prunable weights by magnitude on ``pruning_schedule``.

    Prefer :func:`prune_low_magnitude`, which wraps every supported layer of a model. Training needs the
    :class:`dc_keras.callbacks.UpdatePruningStep` callback.

    Args:
        layer: a Dense, Conv1D, Conv2D, DepthwiseConv2D, Conv2DTranspose or Embedding layer, or a layer with
            ``get_prunable_weights()``.
        pruning_schedule: a dc_keras schedule or tfmot's PolynomialDecay/ConstantSparsity
            (default ``ConstantSparsity(0.5, begin_step=0)``, tfmot's default).
        block_size: ``(r, c)`` blocks pruned or kept together, on the last two kernel axes (Dense:
            ``(inputs, outputs)``, so ``(16, 1)`` is 16 consecutive inputs of one output; see
            :mod:`dc_keras.pruning.blocks`). ``(1, 1)`` (default) prunes single weights.
        block_pooling_type: ``"AVG"`` or ``"MAX"``: how a block's magnitudes are scored.
        regrowth: keep the pruned variables dense and train every weight through a straight-through
            estimator, so that a mask update can revive a pruned weight (see the module docstring). False (default): pruned weights
            are held at exactly zero.
        **kwargs: Keras layer arguments (``name`` defaults to ``"prune_low_magnitude_" + layer.name``).
    """

    TRANSFORM = "pruning"

    def __init__(self, layer, pruning_schedule=None, block_size=UNSTRUCTURED, block_pooling_type="AVG",
                 regrowth=False, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"PruneLowMagnitude wraps a keras.layers.Layer, got {layer!r}")
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(f"layer {layer.name!r} is already wrapped by PruneLowMagnitude")
        if isinstance(layer, keras.Model):
            raise ValueError(f"PruneLowMagnitude wraps layers, not models ({layer.name!r}): "
                             "use dc_keras.prune_low_magnitude(model)")
        if not layer_registry.is_supported(layer, "get_prunable_weights"):
            # weight_attributes() raises the registry's message, which names the supported types.
            layer_registry.weight_attributes(layer)
        if pruning_schedule is None:
            pruning_schedule = ConstantSparsity(0.5, begin_step=0)
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        # Same dtype policy as the inner layer, so mixed precision behaves as without the wrapper.
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.pruning_schedule = as_schedule(pruning_schedule).for_layer(layer.name)
        self.block_size = check_block_size(block_size)
        self.block_pooling_type = check_pooling(block_pooling_type)
        if not isinstance(regrowth, (bool, np.bool_)):
            raise ValueError(f"layer {layer.name!r}: regrowth must be True or False, got {regrowth!r}")
        self.regrowth = bool(regrowth)
        if self.block_size != UNSTRUCTURED:
            refusal = block_refusal(layer)
            if refusal:
                raise ValueError(refusal)
            if not self.pruning_schedule.supports_blocks():
                raise ValueError(
                    f"layer {layer.name!r}: {type(self.pruning_schedule).__name__} overrides compute_mask but not "
                    "compute_block_mask, so it cannot choose blocks; implement compute_block_mask or use "
                    "block_size=(1, 1)")
        self._layouts = []  # one BlockLayout (or None: unstructured) per prunable weight
        self._pruning_vars = []  # (weight variable, mask variable, threshold variable)
        # UpdatePruningStep sets 0 here for a wrapper that is still unbuilt when training begins (built
        # inside the first training call), so that its step does not start at the "no callback" value.
        self._initial_step = -1
        self._state_variables = []  # this wrapper's own variables, in creation order (for saving)

    # ------------------------------------------------------------------ building
    def build(self, input_shape=None):
        """Builds the inner layer, then one mask and one threshold per prunable weight and the step counter."""
        super().build(input_shape)
        pairs = layer_registry.compressible_weights(self.layer, "get_prunable_weights")
        if not pairs:
            raise ValueError(f"layer {self.layer.name!r} has no prunable weights (get_prunable_weights() "
                             "returned an empty list)")
        self._pruning_vars = []
        self._state_variables = []
        self._layouts = [self._layout(name, weight) for name, weight in pairs]
        for name, weight in pairs:
            if not isinstance(weight, keras.Variable):
                raise ValueError(f"layer {self.layer.name!r}: prunable weight {name!r} is not a keras.Variable "
                                 f"({type(weight).__name__}); get_prunable_weights() must return variables")
            mask = self._add_state(f"{name}_mask", weight.shape, weight.dtype, "ones")
            threshold = self._add_state(f"{name}_threshold", (), weight.dtype, "zeros")
            self._pruning_vars.append((weight, mask, threshold))
        # -1 until UpdatePruningStep.on_train_begin sets 0: a training call that sees a step below 1
        # means the callback is missing.
        self.pruning_step = self._add_state("pruning_step", (), "int64",
                                            keras.initializers.Constant(self._initial_step))
        for weight, mask, threshold in self._pruning_vars:
            # A constraint left behind by an earlier wrapper of the same layer object is replaced, not stacked.
            original = weight.constraint
            if isinstance(original, (_MaskConstraint, _RegrowthConstraint)):
                original = original.original
            if self.regrowth:
                # The variables stay dense; pruned weights only have their magnitude bounded.
                weight.constraint = _RegrowthConstraint(mask, threshold, original)
            else:
                weight.constraint = _MaskConstraint(mask, original)
        self.built = True

    def _layout(self, name, weight) -> Optional[BlockLayout]:
        if self.block_size == UNSTRUCTURED:
            return None
        return BlockLayout(weight.shape, self.block_size, self.block_pooling_type,
                           name=f"layer {self.layer.name!r}, weight {name!r}")

    def _add_state(self, name, shape, dtype, initializer):
        # Layer.add_weight has no `synchronization` argument; this is what it does, plus sync-on-read
        # (see the module docstring for why).
        with keras.name_scope(self.name, caller=self):
            variable = keras.Variable(initializer=keras.initializers.get(initializer), shape=shape, dtype=dtype,
                                      trainable=False, name=name, synchronization="on_read",
                                      aggregation="only_first_replica")
        self._track_variable(variable)
        self._state_variables.append(variable)
        return variable

    def save_own_variables(self, store):
        """Saves masks, thresholds and the step (the inner layer saves its own weights).

        Reads through a tensor: numpy 2 warns when Keras converts a sync-on-read variable directly.
        """
        for index, variable in enumerate(self._state_variables):
            store[str(index)] = read_value(variable)

    def load_own_variables(self, store):
        """Restores what :meth:`save_own_variables` saved."""
        if len(store.keys()) != len(self._state_variables):
            raise ValueError(f"layer {self.name!r}: the saved file has {len(store.keys())} pruning variables, "
                             f"this wrapper has {len(self._state_variables)} (was it saved from another layer?)")
        for index, variable in enumerate(self._state_variables):
            variable.assign(store[str(index)])

    @property
    def pruning_vars(self):
        """List of ``(weight, mask, threshold)`` variable triples, as in tfmot."""
        return list(self._pruning_vars)

    def get_prunable_weights(self):
        """The inner layer's pruned variables."""
        return [w for w, _, _ in self._pruning_vars]

    # ------------------------------------------------------------------ running
    def _advance_and_update(self):
        # Fail at trace time with a plain Python error when the callback was forgotten (the usual case);
        # the in-graph assert below still covers functions traced before the step was initialised.
        with tf.init_scope():
            if tf.executing_eagerly() and int(read_value(self.pruning_step)) < 0:
                raise RuntimeError(_CALLBACK_ERROR)
        self.pruning_step.assign_add(1)
        step = keras.ops.convert_to_tensor(self.pruning_step)
        check = tf.debugging.assert_greater_equal(step, tf.constant(1, tf.int64), message=_CALLBACK_ERROR)
        with tf.control_dependencies([check]):
            should_prune = self.pruning_schedule.should_prune(step)

        def update():
            for (weight, mask, threshold), layout in zip(self._pruning_vars, self._layouts):
                if self.regrowth:
                    # Rank the dense values: a pruned weight that training pushed past the threshold comes back.
                    current = weight.value
                else:
                    # Rank the effective weights, so that a position pruned earlier is never ranked by a
                    # stale value.
                    current = keras.ops.multiply(weight.value, keras.ops.cast(mask.value, weight.value.dtype))
                if layout is None:
                    new_threshold, new_mask = self.pruning_schedule.compute_mask(step, current)
                else:
                    new_threshold, new_mask = self.pruning_schedule.compute_block_mask(step, current, layout)
                mask.assign(tf.cast(new_mask, mask.dtype))
                threshold.assign(tf.cast(new_threshold, threshold.dtype))
                if not self.regrowth:
                    # Zero the newly pruned weights before this step's forward pass reads them.
                    weight.assign(keras.ops.multiply(current, keras.ops.cast(new_mask, current.dtype)))
            return tf.constant(True)

        return tf.cond(should_prune, update, lambda: tf.constant(False))

    def call(self, inputs, training=None, **kwargs):
        """Training calls advance the step, update masks when scheduled and run the inner layer on its
        variables (zero where masked); other calls run it on ``weight * mask``. With regrowth every call runs
        it on ``weight * mask`` in value, with the gradient passed straight through to every weight."""
        if training is None:
            training = False
        if isinstance(training, bool):
            if training:
                self._advance_and_update()
                if self.regrowth:
                    return self._call_masked(inputs, kwargs, keep_updates=True)
                # The variables already hold weight * mask: masks are applied to them when they change,
                # and the mask constraint re-applies them after every optimizer update. Skipping the
                # multiply here (and its gradient) is most of the difference to an unpruned step.
                return self.layer(inputs, **kwargs)
        else:
            tf.cond(tf.cast(training, tf.bool), self._advance_and_update, lambda: tf.constant(False))
        # Inference (and symbolic training flags) multiply by the mask, so that weights assigned from
        # outside (set_weights, a custom update rule) can never leak through pruned positions.
        return self._call_masked(inputs, kwargs)

    def _masked_value(self, weight, mask):
        masked = keras.ops.multiply(weight.value, keras.ops.cast(mask.value, weight.value.dtype))
        if not self.regrowth:
            return masked
        # Straight-through: the value is exactly weight * mask (w + (0 - w) and w + (w - w) are exact), the
        # gradient is the identity, so pruned weights keep learning.
        return keras.ops.add(weight.value, keras.ops.stop_gradient(keras.ops.subtract(masked, weight.value)))

    def _call_masked(self, inputs, kwargs, keep_updates=False):
        """The inner layer run with each pruned weight replaced by its masked value; `keep_updates` writes back
        what the inner layer assigned to its other variables (a training call's state, e.g. a custom
        layer's running statistics), which the scope would otherwise discard."""
        mapping = [(weight, self._masked_value(weight, mask)) for weight, mask, _ in self._pruning_vars]
        # collect_losses keeps the inner layer's activity-regularisation losses, re-added to this layer below.
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True,
                                  initialize_variables=False) as scope:
            outputs = self.layer(inputs, **kwargs)
        for loss in scope.losses:
            self.add_loss(loss)
        if keep_updates:
            pruned = {id(weight) for weight, _, _ in self._pruning_vars}
            for variable in self.layer.variables:
                value = scope.get_current_value(variable)
                if id(variable) not in pruned and value is not None:
                    variable.assign(value)
        return outputs

    def apply_masks(self):
        """Sets each pruned variable to ``weight * mask`` now (callbacks call it at epoch ends). With regrowth
        the variables stay dense (their pruned values keep learning) and nothing is assigned."""
        if self.regrowth:
            return
        for weight, mask, _ in self._pruning_vars:
            weight.assign(keras.ops.multiply(weight.value, keras.ops.cast(mask.value, weight.dtype)))

    # ------------------------------------------------------------------ serialisation
    def get_config(self):
        """Inner layer config plus the serialized schedule and the block settings."""
        config = super().get_config()
        config["pruning_schedule"] = keras.saving.serialize_keras_object(self.pruning_schedule)
        config["block_size"] = list(self.block_size)
        config["block_pooling_type"] = self.block_pooling_type
        config["regrowth"] = self.regrowth
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Inverse of :meth:`get_config`."""
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"), custom_objects=custom_objects)
        schedule = config.pop("pruning_schedule", None)
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule, custom_objects=custom_objects)
        return cls(layer, pruning_schedule=schedule, **config)


def read_value(variable) -> np.ndarray:
    """A variable's current value as numpy (the cross-replica value under tf.distribute).

    keras.ops.convert_to_numpy on a tf.Variable goes through the deprecated ``__array__(copy=False)`` path
    of numpy 2; reading a tensor first avoids it.
    """
    value = getattr(variable, "value", variable)
    return tf.convert_to_tensor(value).numpy()


def _iter_layers(model_or_layer) -> Iterator[keras.layers.Layer]:
    """``model_or_layer`` and every layer reachable from it (nested models and the layers of custom blocks
    included); a pruning wrapper's inner layer is not descended into."""
    yield model_or_layer
    if isinstance(model_or_layer, PruneLowMagnitude):
        return
    yield from layer_registry.walk(model_or_layer, containers=True, sublayers=True,
                                   into_wrappers=lambda wrapper: not isinstance(wrapper, PruneLowMagnitude))


def collect_prunable_layers(model) -> List[PruneLowMagnitude]:
    """All PruneLowMagnitude wrappers in ``model`` (nested models included), in layer order."""
    return [layer for layer in _iter_layers(model) if isinstance(layer, PruneLowMagnitude)]


def _has_weights(layer) -> bool:
    try:
        return bool(layer.weights)
    except Exception:  # noqa: BLE001 - an unbuilt custom layer may not answer; it then has no weights yet
        return False


class _Wrapping:
    """How prune_low_magnitude wraps a layer: its default schedule, the per-layer overrides (None: stay
    dense), the block size (one for every layer, or per layer name) and the keyword arguments of each
    PruneLowMagnitude."""

    def __init__(self, default, overrides: Mapping[str, object], kwargs: dict, block_size=UNSTRUCTURED):
        self.default, self.overrides, self.kwargs = default, overrides, kwargs
        if isinstance(block_size, Mapping):
            self.blocks = {name: check_block_size(size, f"block_size[{name!r}]") for name, size in block_size.items()}
            self.default_block = UNSTRUCTURED
        else:
            self.blocks, self.default_block = {}, check_block_size(block_size)
        self.unblocked = []  # layers given unstructured masks because the default block size does not fit them

    def _block_size(self, layer, direct: bool):
        if layer.name in self.blocks:
            return self.blocks[layer.name]
        if self.default_block != UNSTRUCTURED and not direct and block_refusal(layer):
            self.unblocked.append(f"{layer.name} ({type(layer).__name__})")
            return UNSTRUCTURED
        return self.default_block

    def wrap(self, layer, direct: bool):
        """`layer` wrapped for pruning, or unchanged (already wrapped, kept dense, or unsupported: then a
        ValueError when the layer was asked for `direct`ly)."""
        if isinstance(layer, PruneLowMagnitude):
            return layer
        schedule = self.overrides.get(layer.name, self.default)
        if schedule is None:  # per_layer={name: None}: keep this layer dense
            return layer
        if not layer_registry.is_supported(layer, "get_prunable_weights"):
            if direct:
                raise ValueError(
                    f"cannot prune layer {layer.name!r} of type {type(layer).__name__}: dc_keras prunes "
                    "Dense, Conv1D, Conv2D, DepthwiseConv2D, Conv2DTranspose and Embedding layers, and layers "
                    "that implement get_prunable_weights()")
            return layer
        return PruneLowMagnitude(layer, pruning_schedule=schedule, block_size=self._block_size(layer, direct),
                                 **self.kwargs)

    def check_names(self, names) -> None:
        """ValueError when per_layer or a block_size mapping names a layer not among `names`."""
        for option, named in (("per_layer", self.overrides), ("block_size", self.blocks)):
            unknown = sorted(set(named) - set(names))
            if unknown:
                raise ValueError(f"{option} names layers that are not in the model: {unknown}; "
                                 f"layers are {sorted(names)}")


def _prune_model(model, wrapping: _Wrapping):
    """A clone of the Sequential/functional `model` whose supported layers are wrapped (the layer objects
    themselves are reused), with a one-line notice naming weighted layers left unpruned."""
    if not isinstance(model, keras.Sequential) and not _is_functional(model):
        raise ValueError(
            f"prune_low_magnitude accepts Sequential and functional models; {model.name!r} is a subclassed "
            "model: wrap its layers with prune_low_magnitude(layer) inside the model instead")
    wrapping.check_names([layer.name for layer in _iter_layers(model)])
    skipped = []

    def clone_function(layer):
        wrapped = wrapping.wrap(layer, False)
        if wrapped is layer and not isinstance(layer, PruneLowMagnitude) and _has_weights(layer) \
                and not isinstance(layer, keras.Model) and layer.name not in wrapping.overrides:
            skipped.append(f"{layer.name} ({type(layer).__name__})")
        return wrapped

    pruned = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    if skipped:
        _LOG.warning("dc_keras.prune_low_magnitude: not pruned (unsupported type): %s", ", ".join(skipped))
    if wrapping.unblocked:
        _LOG.warning("dc_keras.prune_low_magnitude: pruned unstructured (block_size %s does not apply to their "
                     "kernels): %s", wrapping.default_block, ", ".join(wrapping.unblocked))
    return pruned


def prune_low_magnitude(to_prune, pruning_schedule=None, block_size=(1, 1), block_pooling_type="AVG",
                        per_layer: Optional[Mapping[str, object]] = None, regrowth: bool = False, **kwargs):
    """Wrap a layer, a list of layers, or every supported layer of a Sequential/functional model for pruning.

    Same contract as ``tfmot.sparsity.keras.prune_low_magnitude``: a model comes back as a new model (to
    compile) whose layers are the original layer objects, supported ones wrapped in
    :class:`PruneLowMagnitude` (so the trained weights carry over, and the original model sees the pruning);
    a layer comes back wrapped; a list comes back as a list. Layers of other types in a model pass through
    unwrapped, with a one-line notice for those that have weights; asking for an unsupported layer directly
    raises ValueError.

    Args:
        to_prune: a keras Layer, a list of layers, or a Sequential / functional keras Model.
        pruning_schedule: dc_keras PolynomialDecay, ConstantSparsity, SensitivityThreshold or tfmot's
            PolynomialDecay/ConstantSparsity (default ``ConstantSparsity(0.5, 0)``, as tfmot).
        block_size: ``(r, c)``: prune whole blocks of ``r`` consecutive rows by ``c`` consecutive columns of
            each kernel's last two axes, tfmot's orientation. Dense kernels are ``(inputs, outputs)``:
            ``(16, 1)`` is 16 consecutive inputs of one output, ``(1, 16)`` 16 consecutive outputs of one
            input; Conv1D/Conv2D kernels are blocked over ``(in_channels, out_channels)`` at each tap.
            DepthwiseConv2D, Conv2DTranspose and Embedding take no blocks: asked for directly they raise
            ValueError, inside a model they are pruned unstructured (with a notice). A dict
            ``{layer name: (r, c)}`` (a dc_keras extension) sets blocks per layer; unnamed layers get (1, 1).
        block_pooling_type: ``"AVG"`` (mean ``|w|`` of a block, default) or ``"MAX"``: the score blocks are
            ranked by.
        per_layer: optional ``{layer name: schedule or None}``; a schedule overrides ``pruning_schedule``
            for that layer, None leaves that layer dense. Names that match no layer raise ValueError.
        regrowth: a dc_keras extension (Dynamic Network Surgery / Dynamic Pruning with Feedback). False
            (default, tfmot's behaviour): a pruned weight is held at zero for good. True: the variables keep
            dense values; the forward pass uses ``weight * mask`` while the gradient updates every weight
            (straight-through estimator), and each mask update ranks the dense magnitudes, so a weight pruned
            too early keeps learning and comes back once it outgrows the threshold. Give the schedule a
            frequency that recomputes masks during training (a mask computed once and held gains nothing);
            evaluation, ``strip_pruning`` and saved masks always mean ``weight * mask``.
        **kwargs: passed to each :class:`PruneLowMagnitude`.

    Returns:
        the wrapped layer, list or model.
    """
    check_pooling(block_pooling_type)
    default = as_schedule(pruning_schedule if pruning_schedule is not None else ConstantSparsity(0.5, 0))
    overrides = {name: None if schedule is None else as_schedule(schedule)
                 for name, schedule in dict(per_layer or {}).items()}
    wrapping = _Wrapping(default, overrides, dict(kwargs, block_pooling_type=block_pooling_type, regrowth=regrowth),
                         block_size)

    if isinstance(to_prune, (list, tuple)):
        for layer in to_prune:
            if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
                raise ValueError(f"prune_low_magnitude: list items must be keras layers, got {layer!r}")
        wrapping.check_names([layer.name for layer in to_prune])
        return [wrapping.wrap(layer, True) for layer in to_prune]
    if isinstance(to_prune, keras.Model):
        return _prune_model(to_prune, wrapping)
    if isinstance(to_prune, keras.layers.Layer):
        wrapping.check_names([to_prune.name])
        return wrapping.wrap(to_prune, True)
    raise ValueError(f"prune_low_magnitude accepts a keras Layer, a list of layers or a Sequential/functional "
                     f"keras Model, got {type(to_prune).__name__}")


def _is_functional(model) -> bool:
    # keras.Model instances built from inputs/outputs are Functional; subclasses of keras.Model are not.
    from keras.src.models.functional import Functional  # the class is not exported publicly

    return isinstance(model, Functional) and not _overrides_call(model)


def _overrides_call(model) -> bool:
    from keras.src.models.functional import Functional

    return type(model).call is not Functional.call
