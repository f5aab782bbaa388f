"""Steps the LeNet-300-100 examples share: Fashion-MNIST scaled to [0, 1], the dense baseline, and Deep
Compression stage 1 (pruning with retraining). Each example imports this module after setting its
environment defaults (TF_CPP_MIN_LOG_LEVEL, KERAS_BACKEND), since importing it imports keras.
"""
from __future__ import annotations

import numpy as np
import keras

import dc_keras
from dc_keras.callbacks import UpdatePruningStep
from dc_keras.datasets import fashion_mnist
from dc_keras.models import lenet_300_100


def compile_model(model, learning_rate):
    """Adam + sparse categorical cross-entropy on logits, accuracy metric."""
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def load_data():
    """Fashion-MNIST as ``(x_train, y_train), (x_test, y_test)`` with images as float32 in [0, 1]."""
    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    x_train = (x_train / 255.0).astype("float32")
    x_test = (x_test / 255.0).astype("float32")
    return (x_train, y_train), (x_test, y_test)


def train_dense(data, epochs, batch_size):
    """Trains the dense 784-300-100-10 network on `data` (as from `load_data`) and prints its test accuracy.

    Returns ``(model, test accuracy)``.
    """
    (x_train, y_train), (x_test, y_test) = data
    model = compile_model(lenet_300_100(), 1e-3)
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=2)
    dense_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    print(f"dense test accuracy: {100 * dense_accuracy:.2f}%", flush=True)
    return model, dense_accuracy


def prune_with_retraining(model, data, layer_sparsity, prune_epochs, finetune_epochs, batch_size):
    """Prunes `model` with retraining to `layer_sparsity` ({layer name: fraction pruned}, "ip1" included).

    Each layer's sparsity rises from 0 to its target along a PolynomialDecay over `prune_epochs` (masks
    updated every 100 steps), then `finetune_epochs` more run at the final masks with a lower learning rate.
    Returns the stripped model, compiled for evaluation.
    """
    x_train, y_train = data[0]
    steps_per_epoch = int(np.ceil(len(x_train) / batch_size))
    end_step = steps_per_epoch * prune_epochs
    schedules = {name: dc_keras.PolynomialDecay(0.0, target, begin_step=0, end_step=end_step, frequency=100)
                 for name, target in layer_sparsity.items()}
    pruned = dc_keras.prune_low_magnitude(model, pruning_schedule=schedules["ip1"], per_layer=schedules)
    compile_model(pruned, 5e-4)
    pruned.fit(x_train, y_train, batch_size=batch_size, epochs=prune_epochs, verbose=2,
               callbacks=[UpdatePruningStep()])
    # Fine-tune at the final masks: the step is past end_step, so the masks no longer change.
    pruned.optimizer.learning_rate.assign(1e-4)
    pruned.fit(x_train, y_train, batch_size=batch_size, epochs=finetune_epochs, verbose=2,
               callbacks=[UpdatePruningStep()])
    return compile_model(dc_keras.strip_pruning(pruned), 1e-4)
