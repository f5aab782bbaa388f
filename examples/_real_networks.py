"""What examples/mobilenet_v2.py and examples/resnet.py share: Fashion-MNIST as 32x32 RGB images, the
Deep Compression pipeline with per-layer targets by layer kind, and the README row (file ratio, dense and
compressed accuracy, dc-benchmark latency against the stock int8 and float files from the same run).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from dc_keras import benchmark, presets
from dc_keras.datasets import fashion_mnist
from dc_keras.pipeline import CompressionConfig, DeepCompression, compressible_layers


def fashion_mnist_32x32_rgb(train_examples=None, seed: int = 0):
    """Fashion-MNIST scaled to [0, 1], zero-padded from 28x28 to 32x32 and repeated over 3 channels, the
    input shape of CIFAR-style networks; ``(x_train, y_train), (x_test, y_test)``. The training examples are
    shuffled once with `seed`, so that --train_examples takes a sample of every class."""
    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    order = np.random.default_rng(seed).permutation(len(x_train))
    x_train, y_train = x_train[order], y_train[order]
    if train_examples:
        x_train, y_train = x_train[:train_examples], y_train[:train_examples]

    def images(x):
        x = np.pad(x.astype(np.float32) / 255.0, ((0, 0), (2, 2), (2, 2)))
        return np.repeat(x[..., None], 3, axis=-1)

    return (images(x_train), y_train.astype(np.int64)), (images(x_test), y_test.astype(np.int64))


def arguments(description: str, epochs: int, prune_epochs: int, cluster_epochs: int, output_dir: str):
    """The examples' command line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--output_dir", default=output_dir, help="result directory (new, empty or our own)")
    parser.add_argument("--epochs", type=int, default=epochs,
                        help="dense training epochs; the dense baseline may train up to epochs + prune_epochs + "
                             "cluster_epochs, keeping its best validated epoch (dc_keras.pipeline)")
    parser.add_argument("--prune_epochs", type=int, default=prune_epochs)
    parser.add_argument("--prune_iterations", type=int, default=None,
                        help="prune, retrain, prune more: this many steps (default: min(3, prune_epochs))")
    parser.add_argument("--distill_weight", type=float, default=0.0,
                        help="weight in [0, 1] of distillation from the dense model while retraining (0: off)")
    parser.add_argument("--cluster_epochs", type=int, default=cluster_epochs)
    parser.add_argument("--bits", type=int, default=4, help="codebook index bits of every layer")
    parser.add_argument("--conv_sparsity", type=float, default=None,
                        help="sparsity target of convolutions (default: dc_keras.presets' by-kind target)")
    parser.add_argument("--patience", type=int, default=5,
                        help="dense training stops after this many epochs without a better validation accuracy")
    parser.add_argument("--train_examples", type=int, default=None, help="use only this many (a quick try)")
    parser.add_argument("--num_runs", type=int, default=200, help="dc-benchmark invocations per configuration")
    return parser.parse_args()


# Moving-statistics momentum of every BatchNormalization for these short runs from scratch.
BATCH_NORM_MOMENTUM = 0.9


def settle_batch_norm(model, momentum: float = BATCH_NORM_MOMENTUM):
    """Sets every BatchNormalization's momentum to `momentum`.

    keras.applications uses 0.999 and Keras's default is 0.99, tuned for runs of many thousand steps: over
    ~100 steps an epoch the moving statistics lag so far behind the weights that validation accuracy (which
    uses them) swings by 10-20 points from epoch to epoch, or stays at 10% while training accuracy climbs,
    and the validated dense baseline then reflects the lag rather than the network.
    """
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def compress(model, args) -> dict:
    """Trains, prunes (targets by layer kind), clusters and exports `model` on Fashion-MNIST 32x32 into
    args.output_dir, benchmarks the result, prints and returns the README row. BatchNormalization momentum
    is set to BATCH_NORM_MOMENTUM first (settle_batch_norm)."""
    start = time.perf_counter()
    settle_batch_norm(model)
    data = fashion_mnist_32x32_rgb(args.train_examples)
    sparsity, reasons = presets.default_sparsity(compressible_layers(model))
    if args.conv_sparsity is not None:
        sparsity, reasons = _override_conv(model, sparsity, reasons, args.conv_sparsity)
    print("per-layer sparsity:\n  " + "\n  ".join(reasons), flush=True)
    config = CompressionConfig(sparsity=sparsity, bits=args.bits, epochs=args.epochs, patience=args.patience,
                               prune_epochs=args.prune_epochs, cluster_epochs=args.cluster_epochs,
                               prune_iterations=args.prune_iterations or min(3, max(1, args.prune_epochs)),
                               distill_weight=args.distill_weight)
    report = DeepCompression(config, data, verbose=2).run(model, args.output_dir, plots=False)
    compressed = os.path.join(args.output_dir, "compressed.tflite")
    timing = benchmark.run_benchmark(compressed, num_runs=args.num_runs)
    print(timing.format(), flush=True)
    rows = {row.name: row for row in timing.rows}
    row = {
        "network": model.name, "dense_tflite_bytes": report["files"]["dense.tflite"],
        "compressed_bytes": report["files"]["compressed.tflite"], "ratio": report["files"]["ratio"],
        "dense_validation_accuracy": report.get("accuracy_budget", {}).get("dense_validation"),
        "max_drop_met": report.get("accuracy_budget", {}).get("met"),
        "dense_accuracy": report["tflite_accuracy"].get("dense.tflite"),
        "compressed_accuracy": report["tflite_accuracy"].get("compressed.tflite"),
        "latency_ms": {name: r.median_ms for name, r in rows.items()}, "simd_path": timing.simd_path,
        "minutes": round((time.perf_counter() - start) / 60, 1),
    }
    print(json.dumps(row, indent=2))
    drop = 100 * (row["dense_accuracy"] - row["compressed_accuracy"])
    print(f"{model.name}: {row['ratio']:.1f}x smaller, test accuracy {100 * row['dense_accuracy']:.2f}% -> "
          f"{100 * row['compressed_accuracy']:.2f}% ({-drop:+.2f} points)", flush=True)
    return row


def _override_conv(model, sparsity: dict, reasons: list, target: float):
    """`sparsity` with every full convolution raised or lowered to `target`, except where the by-kind rule
    capped it (first, last and small layers keep their caps)."""
    import keras

    by_name = {layer.name: layer for layer in compressible_layers(model)}
    new_sparsity, new_reasons = dict(sparsity), []
    for reason in reasons:
        name = reason.split(":")[0]
        layer = by_name.get(name)
        capped = "at most" in reason
        if (isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D)
                and not capped):
            new_sparsity[name] = target
            reason = f"{name}: {target:.0%} (conv, --conv_sparsity)"
        new_reasons.append(reason)
    return new_sparsity, new_reasons


__all__ = ["arguments", "compress", "fashion_mnist_32x32_rgb"]
