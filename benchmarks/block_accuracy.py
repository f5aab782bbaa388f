"""Block pruning's accuracy trade on Fashion-MNIST: block-structured vs unstructured pruning, then clustering.

For LeNet-300-100 and LeNet-5 (dc_keras.models) one dense model is trained per network and shared by every
configuration. Each configuration prunes a copy to the network's preset sparsities (dc_keras/presets.py) with
the pipeline's iterative pruning (dc_keras.pipeline.stages.prune), unstructured or with blocks of 4, 8 or 16
consecutive inputs ("16x1") or outputs ("1x16") of every Dense kernel (conv layers stay unstructured unless
--conv-blocks: then input or output channels at each tap of every Conv2D with more than one input channel), and,
with --last-layer-unstructured, also of every Dense kernel but the classifier's (what
CompressionConfig(block_size=(16, 1)) does); then it clusters at the preset bits with centroid fine-tuning.
Training uses the training set minus a held-out validation tail (validation_fraction); progress lines show
validation accuracy, and the test set is evaluated once per configuration at the end, for the table.

Usage:  nice -n 5 python benchmarks/block_accuracy.py [--models lenet300 lenet5] [--dense-epochs 8]
        [--prune-epochs 6] [--prune-iterations 3] [--cluster-epochs 2] [--blocks 4 8 16]
        [--lenet5-blocks 16] [--last-layer-unstructured] [--conv-blocks] [--out block_accuracy.md]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from dc_keras.datasets import fashion_mnist  # noqa: E402
from dc_keras.pipeline import CompressionConfig, compressible_layers, stages  # noqa: E402
from dc_keras.presets import BUILTIN_PRESETS, builtin_model  # noqa: E402


def load_data():
    """Fashion-MNIST scaled to [0, 1]."""
    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    return ((x_train.astype(np.float32) / 255.0, y_train.astype(np.int64)),
            (x_test.astype(np.float32) / 255.0, y_test.astype(np.int64)))


def block_configs(sizes, blocked_layers, last_unstructured=False):
    """[(label, CompressionConfig.block_size)]: unstructured first, then r x 1 (inputs) and 1 x c (outputs) on
    every one of `blocked_layers` for each size; with `last_unstructured`, also each size with the last
    layer (the classifier) unstructured, which is what a single block_size gives in the pipeline."""
    shapes = [(f"{n}x1 (inputs)", (n, 1)) for n in sizes] + [(f"1x{n} (outputs)", (1, n)) for n in sizes]
    configs = [("unstructured", None)]
    configs += [(label, {name: size for name in blocked_layers}) for label, size in shapes]
    if last_unstructured:
        configs += [(f"{label}, {blocked_layers[-1]} unstructured", size) for label, size in shapes]
    return configs


def accuracy(model, split) -> float:
    """Accuracy of `model` on (x, y)."""
    x, y = split
    logits = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def sparsity(model) -> float:
    """Fraction of zero weights over all compressible kernels."""
    kernels = stages.kernel_arrays(model)
    total = sum(k.size for k in kernels.values())
    return sum(int(np.sum(k == 0)) for k in kernels.values()) / max(total, 1)


def run_model(name, data, args, sizes):
    """Rows (model, config, validation accuracy, test accuracy, sparsity) for one network."""
    preset = BUILTIN_PRESETS[name]
    base = CompressionConfig(sparsity=preset["sparsity"], bits=preset["bits"], epochs=args.dense_epochs,
                             prune_epochs=args.prune_epochs, prune_iterations=args.prune_iterations,
                             cluster_epochs=args.cluster_epochs, validation_fraction=args.validation_fraction,
                             seed=args.seed)
    validation = stages.validation_split(data, base)
    start = time.time()
    dense, _, prune_start = stages.train_dense(builtin_model(name), data, base)
    print(f"{name}: dense, validation {accuracy(dense, validation):.4f} ({time.time() - start:.0f} s)", flush=True)
    finals = [("dense", dense)]
    blocked_layers = [layer.name for layer in compressible_layers(dense) if isinstance(layer, keras.layers.Dense)]
    if args.conv_blocks:  # a conv with one input channel (LeNet-5's conv1) has no input-channel blocks
        blocked_layers = [layer.name for layer in compressible_layers(dense)
                          if type(layer) is keras.layers.Conv2D and layer.kernel.shape[-2] > 1] + blocked_layers
    for label, block_size in block_configs(sizes, blocked_layers, args.last_layer_unstructured):
        start = time.time()
        config = base.replace(block_size=block_size)
        keras.utils.set_random_seed(args.seed)
        pruned, _ = stages.prune(prune_start, data, config)
        clustered, _ = stages.cluster(pruned, data, config)
        print(f"{name}: {label}, pruned validation {accuracy(pruned, validation):.4f}, clustered validation "
              f"{accuracy(clustered, validation):.4f}, sparsity {sparsity(clustered):.2%} "
              f"({time.time() - start:.0f} s)", flush=True)
        finals.append((label, clustered))
    _, test = data
    return [(name, label, accuracy(model, validation), accuracy(model, test), sparsity(model))
            for label, model in finals]


def table(rows) -> str:
    """Markdown table: model, configuration, test accuracy, change vs unstructured (points)."""
    lines = ["| model | configuration (AVG pooling) | kernel sparsity | validation accuracy | test accuracy "
             "| vs unstructured |", "|---|---|---|---|---|---|"]
    reference = {model: test for model, label, _, test, _ in rows if label == "unstructured"}
    for model, label, val, test, zeros in rows:
        change = "" if label in ("dense", "unstructured") else f"{100 * (test - reference[model]):+.2f} points"
        lines.append(f"| {model} | {label} | {zeros:.2%} | {val:.2%} | {test:.2%} | {change} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet300", "lenet5"], choices=sorted(BUILTIN_PRESETS))
    parser.add_argument("--dense-epochs", type=int, default=8)
    parser.add_argument("--prune-epochs", type=int, default=6)
    parser.add_argument("--prune-iterations", type=int, default=3)
    parser.add_argument("--cluster-epochs", type=int, default=2)
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 8, 16], help="block lengths to try")
    parser.add_argument("--lenet5-blocks", type=int, nargs="+", default=None,
                        help="block lengths for LeNet-5 (default: --blocks); fewer to save time")
    parser.add_argument("--last-layer-unstructured", action="store_true",
                        help="also run each block configuration with the last Dense layer unstructured")
    parser.add_argument("--conv-blocks", action="store_true",
                        help="block the Conv2D kernels with more than one input channel too (input or output "
                             "channels at each tap)")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)

    data = load_data()
    started = time.time()
    rows = []
    for name in args.models:
        sizes = args.lenet5_blocks if name == "lenet5" and args.lenet5_blocks else args.blocks
        rows += run_model(name, data, args, sizes)
    text = table(rows)
    print(text)
    print(f"total {time.time() - started:.0f} s", flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
