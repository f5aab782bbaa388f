"""Epoch-time overhead of pruning: dc_keras (Keras 3) vs plain Keras 3 fit, and tfmot (tf_keras) vs plain tf_keras.

LeNet-300-100 (784-300-100-10) on Fashion-MNIST, Adam, the same PolynomialDecay schedule (0.5 -> 0.92,
masks updated every 100 steps) for dc_keras and tfmot. The four configurations run in turns within one
process, ``--rounds`` times; each configuration's time is the median over its timed epochs (the first epoch
of every fit is a warm-up: it traces the training function). Prints wall-clock and process CPU times (CPU
time is the steadier figure when other jobs share the machine) and the ratios:

    dc_keras / keras plain      (target <= 1.25)
    tfmot / tf_keras plain
    dc_keras / tfmot            (target <= 1.0)

Usage:  python benchmarks/pruning_overhead.py [--epochs 4] [--rounds 2] [--batch-size 128] [--train-size N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# Bind tf.keras to Keras 3 before tfmot is imported: tfmot sets TF_USE_LEGACY_KERAS=1 for the process.
_ = tf.keras.layers  # noqa: E402
import keras  # noqa: E402

import dc_keras  # noqa: E402
from dc_keras.callbacks import UpdatePruningStep  # noqa: E402
from dc_keras.datasets import fashion_mnist  # noqa: E402
from dc_keras.models import lenet_300_100  # noqa: E402

INITIAL, FINAL, FREQUENCY = 0.5, 0.92, 100


def _epoch_timer(callback_base):
    class EpochTimer(callback_base):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            # (wall, CPU) seconds: on a shared machine the process's CPU time is the steadier of the two.
            self.times.append((time.perf_counter() - self._start[0], time.process_time() - self._start[1]))

    return EpochTimer()


def run_keras(x, y, args, prune: bool):
    keras.utils.set_random_seed(0)
    model = lenet_300_100()
    callbacks = [_epoch_timer(keras.callbacks.Callback)]
    if prune:
        end = args.epochs * int(np.ceil(len(x) / args.batch_size))
        model = dc_keras.prune_low_magnitude(
            model, pruning_schedule=dc_keras.PolynomialDecay(INITIAL, FINAL, 0, end, frequency=FREQUENCY))
        callbacks.append(UpdatePruningStep())
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=callbacks)
    return callbacks[0].times[1:]


def run_tf_keras(x, y, args, prune: bool):
    import tf_keras
    import tensorflow_model_optimization as tfmot

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([
        tf_keras.Input(shape=(28, 28)),
        tf_keras.layers.Flatten(),
        tf_keras.layers.Dense(300, activation="relu", name="ip1"),
        tf_keras.layers.Dense(100, activation="relu", name="ip2"),
        tf_keras.layers.Dense(10, name="ip3"),
    ])
    callbacks = [_epoch_timer(tf_keras.callbacks.Callback)]
    if prune:
        end = args.epochs * int(np.ceil(len(x) / args.batch_size))
        schedule = tfmot.sparsity.keras.PolynomialDecay(INITIAL, FINAL, 0, end, frequency=FREQUENCY)
        model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
    model.compile(tf_keras.optimizers.Adam(1e-3),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=callbacks)
    return callbacks[0].times[1:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fit; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="times each configuration is run, in turns")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-size", type=int, default=0, help="use the first N training images (0: all)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not timed)")

    (x, y), _ = fashion_mnist()
    if args.train_size:
        x, y = x[:args.train_size], y[:args.train_size]
    x = (x / 255.0).astype("float32")
    print(f"LeNet-300-100, Fashion-MNIST {len(x)} images, batch {args.batch_size}, {args.epochs} epochs "
          f"({args.epochs - 1} timed) x {args.rounds} rounds; TF {tf.__version__}, Keras {keras.__version__}",
          flush=True)

    configs = {
        "keras plain": lambda: run_keras(x, y, args, False),
        "dc_keras pruned": lambda: run_keras(x, y, args, True),
        "tf_keras plain": lambda: run_tf_keras(x, y, args, False),
        "tfmot pruned": lambda: run_tf_keras(x, y, args, True),
    }
    times = {name: [] for name in configs}
    for round_index in range(args.rounds):
        for name, run in configs.items():
            epoch_times = run()
            times[name].extend(epoch_times)
            print(f"  round {round_index + 1}: {name:16s} wall " + " ".join(f"{w:.2f}s" for w, _ in epoch_times)
                  + "  cpu " + " ".join(f"{c:.2f}s" for _, c in epoch_times), flush=True)
    wall = {name: statistics.median(w for w, _ in values) for name, values in times.items()}
    cpu = {name: statistics.median(c for _, c in values) for name, values in times.items()}

    print("\nmedian epoch time        wall s    cpu s")
    for name in configs:
        print(f"  {name:22s} {wall[name]:7.3f}  {cpu[name]:7.3f}")
    rows = [
        ("dc_keras / keras plain", "dc_keras pruned", "keras plain", "<= 1.25"),
        ("tfmot / tf_keras plain", "tfmot pruned", "tf_keras plain", ""),
        ("dc_keras / tfmot", "dc_keras pruned", "tfmot pruned", "<= 1.00"),
    ]
    print("\nratios                    wall    cpu")
    for label, num, den, target in rows:
        print(f"  {label:24s} {wall[num] / wall[den]:5.2f}  {cpu[num] / cpu[den]:5.2f}"
              f"  {('target ' + target) if target else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
