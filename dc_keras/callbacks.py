"""Keras callbacks for dc_keras training: ``UpdatePruningStep`` and ``PruningSummaries`` (tfmot's names)."""
from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from dc_keras.pruning.wrapper import collect_prunable_layers, read_value

__all__ = ["UpdatePruningStep", "PruningSummaries"]


class UpdatePruningStep(keras.callbacks.Callback):
    """Required in ``model.fit`` when the model has pruning wrappers.

    At the start of training it sets the step counter of every wrapper that has never trained to 0 (a
    restored model keeps its step, so the schedule resumes) and applies the masks to the variables; the
    wrappers then advance the step inside the compiled training step, so this callback costs nothing per
    batch. At each epoch end it re-applies the masks, a guard for optimizers that ignore variable
    constraints.
    """

    def __init__(self):
        super().__init__()
        self.prunable_layers = []

    def on_train_begin(self, logs=None):
        """Collect the wrappers, start the fresh ones at step 0 and apply every mask."""
        self.prunable_layers = collect_prunable_layers(self.model)
        for layer in self.prunable_layers:
            if not layer.built:
                layer._initial_step = 0  # built later, inside the first training call
                continue
            if int(read_value(layer.pruning_step)) < 0:
                layer.pruning_step.assign(0)
            # Training calls use the variables as they are: zero any weight set from outside since.
            layer.apply_masks()

    def on_epoch_end(self, epoch, logs=None):
        """Re-apply the masks so that the saved variables are exactly ``weight * mask``."""
        for layer in self.prunable_layers:
            if layer.built:
                layer.apply_masks()


def _scalar_metadata():
    # TensorBoard's scalars plugin: plugin name "scalars", empty content (ScalarPluginData version 0),
    # data class DATA_CLASS_SCALAR.
    metadata = tf.compat.v1.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    metadata.plugin_data.content = b""
    metadata.data_class = 1
    return metadata.SerializeToString()


_SCALAR_METADATA = _scalar_metadata()


def _pruning_scalars(model):
    """{tag: value} of each wrapper's per-weight sparsity (of its mask) and threshold."""
    values = {}
    for layer in collect_prunable_layers(model):
        if not layer.built:
            continue
        for weight, mask, threshold in layer.pruning_vars:
            tag = f"{layer.layer.name}/{weight.path.split('/')[-1]}"
            mask_value = read_value(mask)
            values[f"{tag}/sparsity"] = float(1.0 - np.mean(mask_value))
            values[f"{tag}/threshold"] = float(read_value(threshold))
    return values


class PruningSummaries(keras.callbacks.Callback):
    """Writes each pruned weight's sparsity and threshold to TensorBoard (``tf.summary``) under ``log_dir``.

    Tags are ``pruning/<layer>/<weight>/sparsity`` and ``.../threshold``; the step is the optimizer's
    iteration count. ``update_freq`` is ``"epoch"`` or a number of batches. Use it next to
    ``keras.callbacks.TensorBoard`` for losses and metrics (tfmot's version subclasses that callback).
    """

    def __init__(self, log_dir, update_freq="epoch"):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ValueError(f"PruningSummaries: log_dir must be a non-empty path, got {log_dir!r}")
        if update_freq != "epoch" and (isinstance(update_freq, bool) or not isinstance(update_freq, int)
                                       or update_freq <= 0):
            raise ValueError(f"PruningSummaries: update_freq must be 'epoch' or a positive number of batches, "
                             f"got {update_freq!r}")
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self._writer = None
        self._batches = 0

    def get_config(self):
        """Constructor arguments."""
        return {"log_dir": self.log_dir, "update_freq": self.update_freq}

    def _write(self):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "pruning"))
        step = int(read_value(self.model.optimizer.iterations)) if self.model.optimizer else 0
        with self._writer.as_default(step=step):
            for tag, value in _pruning_scalars(self.model).items():
                # What tf.summary.scalar writes, without needing the tensorboard package installed.
                tf.summary.write(f"pruning/{tag}", tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)
        self._writer.flush()

    def on_train_begin(self, logs=None):
        """Log the starting masks (step 0 or the resumed step)."""
        self._batches = 0
        self._write()

    def on_train_batch_end(self, batch, logs=None):
        """With an integer update_freq, log every that many batches."""
        if self.update_freq != "epoch":
            self._batches += 1
            if self._batches % self.update_freq == 0:
                self._write()

    def on_epoch_end(self, epoch, logs=None):
        """Log at each epoch end."""
        self._write()

    def on_train_end(self, logs=None):
        """Close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
