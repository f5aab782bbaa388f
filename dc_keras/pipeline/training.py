"""Training for the pipeline's stages: the validation split, model selection on it, and knowledge distillation.

* `split_data` carves the validation share out of the training data after a seeded shuffle: user data may
  be ordered (by class, by source, by time), and the tail of ordered data is not a sample of the whole.
* `BestEpoch` keeps, in memory, every variable of the model at its best validated epoch (wrapper state
  included: pruning masks, thresholds and steps, clustering centroids and indices) and restores it when
  training ends, stopping early after `patience` epochs without improvement if asked.
* Distillation: the teacher's log-probabilities are computed once per stage (the teacher and the inputs do
  not change between epochs, so once per epoch would give the same numbers at stage-length cost) and ride
  along with the labels in one packed target array, so the loss needs no second model in the training step.
"""
from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from dc_keras.pipeline.config import CompressionConfig
from dc_keras.pipeline.keras_tools import _output_is_probability, compile_for_classification

# Probabilities are clipped to this before their logarithm (a softmax output can underflow to 0).
_PROBABILITY_FLOOR = 1e-7


class DataSplits(NamedTuple):
    """The three uses of the data: `fit` trains, `validation` selects models (None when
    validation_fraction is 0), `test` gives only the reported numbers. Each is (x, y)."""

    fit: Tuple[np.ndarray, np.ndarray]
    validation: Optional[Tuple[np.ndarray, np.ndarray]]
    test: Tuple[np.ndarray, np.ndarray]


def split_data(data, config: CompressionConfig) -> DataSplits:
    """DataSplits of ((x_train, y_train), (x_test, y_test)): int(len(x_train) * validation_fraction) examples
    drawn by a permutation seeded with config.seed go to validation, the rest (in their order) to fit."""
    if isinstance(data, DataSplits):
        return data
    (x, y), test = data
    held_out = int(len(x) * config.validation_fraction)
    if not held_out:
        return DataSplits((x, y), None, test)
    order = np.random.default_rng(config.seed).permutation(len(x))
    validation_rows, fit_rows = np.sort(order[:held_out]), np.sort(order[held_out:])
    return DataSplits((x[fit_rows], y[fit_rows]), (x[validation_rows], y[validation_rows]), test)


def _best_epoch_callback(patience: Optional[int], phases: Sequence[Tuple[int, float]] = (), verbose: int = 0,
                         on_first_phase_end: Optional[Callable] = None):
    import keras

    from dc_keras.pruning.wrapper import read_value

    class BestEpoch(keras.callbacks.Callback):
        """Restores every model variable to the epoch of highest `val_accuracy` when training ends; with an
        integer `patience`, stops training once that many epochs passed without improvement.

        With `phases` [(epochs, learning_rate), ...] training runs the phases in order: a phase ends after
        its epochs or, with `patience`, once that many epochs passed without improvement, and the next one
        starts from the best weights so far at its own learning rate. Only the last phase stops training.
        `on_first_phase_end(best epoch, weights)` is called with those best weights when the first phase
        ends (not at all when training ends within it).
        """

        def __init__(self):
            super().__init__()
            self.patience = patience
            self.best, self.best_epoch, self.epochs_run, self._snapshot, self._waited = -math.inf, None, 0, None, 0
            self._phases = [phase for phase in phases if phase[0] > 0]
            self._phase, self._phase_epochs = 0, 0

        def on_train_begin(self, logs=None):
            if self._phases:
                self.model.optimizer.learning_rate.assign(self._phases[0][1])

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_accuracy")
            if value is None:
                raise RuntimeError("model selection needs val_accuracy in the epoch logs (validation data missing)")
            self.epochs_run, self._phase_epochs = epoch + 1, self._phase_epochs + 1
            if value > self.best:
                self.best, self.best_epoch, self._waited = float(value), epoch + 1, 0
                self._snapshot = [np.array(read_value(v)) for v in self.model.weights]
            else:
                self._waited += 1
            out_of_patience = self.patience is not None and self._waited >= self.patience
            if self._phase + 1 < len(self._phases):
                if out_of_patience or self._phase_epochs >= self._phases[self._phase][0]:
                    self._next_phase()
            elif out_of_patience:
                self.model.stop_training = True

        def _next_phase(self):
            if self._phase == 0 and on_first_phase_end is not None:
                on_first_phase_end(self.best_epoch, self._snapshot if self._snapshot is not None else
                                   [np.array(read_value(v)) for v in self.model.weights])
            self._phase, self._phase_epochs, self._waited = self._phase + 1, 0, 0
            self._restore()
            self.model.optimizer.learning_rate.assign(self._phases[self._phase][1])
            if verbose:
                print(f"learning rate {self._phases[self._phase][1]:g} from epoch {self.epochs_run + 1}, resuming "
                      f"from the best validated epoch ({self.best_epoch})", flush=True)

        def _restore(self):
            if self._snapshot is not None:
                for variable, value in zip(self.model.weights, self._snapshot):
                    variable.assign(value)

        def on_train_end(self, logs=None):
            self._restore()

        def summary(self):
            """{"epochs_run", "best_epoch", "best_val_accuracy"} of the finished training."""
            return {"epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                    "best_val_accuracy": None if self.best_epoch is None else self.best}

    return BestEpoch()


def _first_phase_end_callback(phases: Sequence[Tuple[int, float]], on_first_phase_end: Callable):
    """Calls `on_first_phase_end(epoch, weights)` after the last epoch of the first of `phases` (training
    without a validation split, where phases end by epoch count)."""
    import keras

    from dc_keras.pruning.wrapper import read_value

    class FirstPhaseEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == phases[0][0]:
                on_first_phase_end(epoch + 1, [np.array(read_value(v)) for v in self.model.weights])

    return FirstPhaseEnd()


def _phase_schedule(phases: Sequence[Tuple[int, float]]):
    """A LearningRateScheduler running `phases` by epoch count (training without a validation split)."""
    import keras

    def rate(epoch, current):
        for epochs, learning_rate in phases:
            if epoch < epochs:
                return learning_rate
            epoch -= epochs
        return current

    return keras.callbacks.LearningRateScheduler(rate)


def log_probabilities(model, x, batch_size: int = 1000) -> np.ndarray:
    """`model`'s log-probabilities on `x`: log_softmax of logits, or the log of a softmax output."""
    outputs = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)
    if _output_is_probability(model):
        return np.log(np.clip(outputs, _PROBABILITY_FLOOR, 1.0)).astype(np.float32)
    shifted = outputs - outputs.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)


class TeacherTargets(NamedTuple):
    """The teacher's log-probabilities on the fit and validation inputs, and what computing them cost."""

    fit: np.ndarray
    validation: Optional[np.ndarray]
    seconds: float


def teacher_targets(teacher, splits: DataSplits) -> TeacherTargets:
    """The teacher's log-probabilities on the fit (and validation) inputs, computed once for a stage."""
    start = time.perf_counter()
    fit = log_probabilities(teacher, splits.fit[0])
    validation = log_probabilities(teacher, splits.validation[0]) if splits.validation is not None else None
    return TeacherTargets(fit, validation, time.perf_counter() - start)


def _one_hot(y: np.ndarray, classes: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[-1] == classes:
        return y.astype(np.float32)
    return np.eye(classes, dtype=np.float32)[np.asarray(y).reshape(-1).astype(np.int64)]


def pack_targets(y: np.ndarray, teacher_log_probabilities: np.ndarray) -> np.ndarray:
    """[one-hot labels | teacher log-probabilities], the target rows `distillation_loss` reads."""
    classes = teacher_log_probabilities.shape[-1]
    return np.concatenate([_one_hot(np.asarray(y), classes), teacher_log_probabilities], axis=-1)


def distillation_loss(temperature: float, weight: float, from_logits: bool):
    """(1 - weight) * CE(labels, student) + weight * T^2 * KL(softmax(teacher/T) || softmax(student/T)).

    y_true holds `pack_targets` rows. A softmax student output enters as its log, which gives the same
    tempered softmax as its logits would (softmax is shift-invariant and log-probabilities are logits
    shifted by their log-sum-exp).
    """
    from keras import ops

    def loss(y_true, y_pred):
        classes = ops.shape(y_pred)[-1]
        labels, teacher = y_true[..., :classes], y_true[..., classes:]
        student = (ops.log_softmax(y_pred, axis=-1) if from_logits
                   else ops.log(ops.clip(y_pred, _PROBABILITY_FLOOR, 1.0)))
        cross_entropy = -ops.sum(labels * student, axis=-1)
        teacher_soft = ops.log_softmax(teacher / temperature, axis=-1)
        student_soft = ops.log_softmax(student / temperature, axis=-1)
        kl = ops.sum(ops.exp(teacher_soft) * (teacher_soft - student_soft), axis=-1)
        return (1.0 - weight) * cross_entropy + weight * temperature ** 2 * kl

    loss.__name__ = "distillation_loss"
    return loss


def _packed_accuracy(y_true, y_pred):
    from keras import ops

    labels = y_true[..., :ops.shape(y_pred)[-1]]
    return ops.cast(ops.equal(ops.argmax(labels, axis=-1), ops.argmax(y_pred, axis=-1)), "float32")


def compile_for_distillation(model, learning_rate: float, temperature: float, weight: float):
    """Compile with Adam, `distillation_loss` and an "accuracy" metric that reads packed targets."""
    import keras

    loss = distillation_loss(temperature, weight, from_logits=not _output_is_probability(model))
    accuracy = keras.metrics.MeanMetricWrapper(_packed_accuracy, name="accuracy")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=[accuracy])
    return model


def fit(model, data, config: CompressionConfig, epochs: int, learning_rate: float, callbacks=(), verbose: int = 0,
        select: bool = True, patience: Optional[int] = None, teacher: Optional[TeacherTargets] = None,
        phases: Sequence[Tuple[int, float]] = (), on_first_phase_end: Optional[Callable] = None):
    """Train `model` in place for up to `epochs` on the fit split (stopping at an interrupt).

    select: keep the epoch of best validation accuracy (needs a validation split; without one the last
      epoch stays). patience: stop that many epochs after the last improvement (None: never early).
    teacher: distil from these targets with config.distill_temperature and config.distill_weight.
    phases: [(epochs, learning_rate), ...] run in order instead of one learning rate (see BestEpoch).
    on_first_phase_end: called as (epoch, weights in model.weights order) with the weights the second phase
      starts from — the first phase's best validated epoch, or its last one without validation — when
      training goes past the first phase.
    Returns {"epochs_run", "best_epoch", "best_val_accuracy"} (best_* None without selection).
    """
    from dc_keras.pipeline.keras_tools import interrupt_check_callback

    splits = split_data(data, config)
    (x, y), validation = splits.fit, splits.validation
    one_hot = y.ndim == 2
    if teacher is not None:
        compile_for_distillation(model, learning_rate, config.distill_temperature, config.distill_weight)
        y = pack_targets(y, teacher.fit)
        if validation is not None:
            validation = (validation[0], pack_targets(validation[1], teacher.validation))
    else:
        compile_for_classification(model, learning_rate, one_hot)
    summary = {"epochs_run": epochs, "best_epoch": None, "best_val_accuracy": None}
    chooser = (_best_epoch_callback(patience, phases, verbose, on_first_phase_end)
               if select and validation is not None else None)
    phases = [phase for phase in phases if phase[0] > 0]
    schedule = [_phase_schedule(phases)] if phases and chooser is None else []
    if schedule and on_first_phase_end is not None and len(phases) > 1:
        schedule.append(_first_phase_end_callback(phases, on_first_phase_end))
    if epochs:
        model.fit(x, y, batch_size=config.batch_size, epochs=epochs, verbose=verbose, shuffle=True,
                  validation_data=validation if chooser is not None else None, validation_batch_size=1000,
                  callbacks=[*callbacks, *schedule, *([chooser] if chooser else []), interrupt_check_callback()])
    if teacher is not None:
        # The distillation loss is a closure: clone_model (strip_pruning, strip_clustering) could not
        # rebuild it from the compile config.
        compile_for_classification(model, learning_rate, one_hot)
    if not epochs:
        return {**summary, "epochs_run": 0}
    return chooser.summary() if chooser is not None else summary


def accuracy_on(model, split: Optional[Tuple[np.ndarray, np.ndarray]], config: CompressionConfig) -> Optional[float]:
    """Top-1 accuracy of `model` on one (x, y) split (None for a missing split)."""
    if split is None:
        return None
    x, y = split
    compile_for_classification(model, config.learning_rate, y.ndim == 2)
    return float(model.evaluate(x, y, batch_size=1000, verbose=0)[1])
