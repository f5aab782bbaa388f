"""The paper's bits ablation (Section 3 / Fig. 6-8), on LeNet-300-100 / Fashion-MNIST: accuracy vs bits.

For bits b = 2..8 every layer is clustered to 2**b shared weights (linear initialisation), once starting
from the dense network and once from the pruned one; test accuracy is measured right after k-means and
after --finetune-epochs of centroid fine-tuning, next to the expected compression rate of the P+Q stage
(`dc_keras.compression_report`). The paper's finding to compare with: accuracy holds down to a few bits
and drops sharply below, and pruning + quantization together lose less than quantization alone at the same
size.

Usage:  python benchmarks/bits_ablation.py [--bits 2 3 4 5 6 7 8] [--dense-epochs 6] [--finetune-epochs 1]
        [--out-dir .]
Writes bits_ablation.md (the table) and, when matplotlib is installed, bits_ablation.png to --out-dir.
Runs in about five minutes on two CPU cores with the defaults.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import keras  # noqa: E402

import dc_keras  # noqa: E402
from dc_keras.callbacks import UpdatePruningStep  # noqa: E402
from dc_keras.datasets import fashion_mnist  # noqa: E402
from dc_keras.models import lenet_300_100  # noqa: E402

LAYER_SPARSITY = {"ip1": 0.92, "ip2": 0.91, "ip3": 0.74}  # the paper's Table 2 densities (8% / 9% / 26%)


def compile_model(model, learning_rate):
    """Adam + sparse categorical cross-entropy on logits, accuracy metric."""
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def quantize(model, bits, data, finetune_epochs, batch_size):
    """(accuracy after k-means, accuracy after fine-tuning, P+Q compression ratio) at `bits`."""
    (x_train, y_train), (x_test, y_test) = data
    clustered = compile_model(dc_keras.cluster_weights(model, bits=bits, cluster_centroids_init="linear"), 1e-4)
    after_kmeans = clustered.evaluate(x_test, y_test, verbose=0, batch_size=1024)[1]
    if finetune_epochs:
        clustered.fit(x_train, y_train, epochs=finetune_epochs, batch_size=batch_size, verbose=0)
    after_finetune = clustered.evaluate(x_test, y_test, verbose=0, batch_size=1024)[1]
    ratio = dc_keras.compression_report(clustered).total.ratio
    return after_kmeans, after_finetune, ratio


def _write_table(results, dense_accuracy: float, pruned_accuracy: float, pruned_ratio: float,
                 finetune_epochs: int, out_dir: str) -> None:
    """Writes (and prints) bits_ablation.md: one row per (bits, Q, P+Q) result and the 32-bit baselines."""
    lines = [
        f"# Bits ablation: LeNet-300-100 on Fashion-MNIST (test accuracy, %)",
        "",
        f"Dense 32-bit baseline {100 * dense_accuracy:.2f}%; pruned 32-bit {100 * pruned_accuracy:.2f}% "
        f"({pruned_ratio:.1f}x). Q = weight sharing of the dense net, P+Q = of the pruned net; 'k-means' is "
        f"right after clustering, 'fine-tuned' after {finetune_epochs} epoch(s) of centroid training; "
        "'rate' is the expected size ratio of the weights (compression_report).",
        "",
        "| bits | Q k-means | Q fine-tuned | Q rate | P+Q k-means | P+Q fine-tuned | P+Q rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for bits, q, pq in results:
        lines.append(f"| {bits} | {100 * q[0]:.2f} | {100 * q[1]:.2f} | {q[2]:.1f}x | "
                     f"{100 * pq[0]:.2f} | {100 * pq[1]:.2f} | {pq[2]:.1f}x |")
    lines.append(f"| 32 | {100 * dense_accuracy:.2f} | - | 1.0x | {100 * pruned_accuracy:.2f} | - | "
                 f"{pruned_ratio:.1f}x |")
    table = "\n".join(lines) + "\n"
    os.makedirs(out_dir, exist_ok=True)
    table_path = os.path.join(out_dir, "bits_ablation.md")
    with open(table_path, "w") as handle:
        handle.write(table)
    print()
    print(table)
    print(f"wrote {table_path}")



def _plot(results, dense_accuracy: float, out_dir: str) -> None:
    """bits_ablation.png: accuracy against bits, Q and P+Q, before and after fine-tuning (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
    else:
        bits = [b for b, _, _ in results]
        figure, axis = plt.subplots(figsize=(6.4, 4.2))
        axis.plot(bits, [100 * q[1] for _, q, _ in results], "o-", label="quantization only (fine-tuned)")
        axis.plot(bits, [100 * q[0] for _, q, _ in results], "o:", color="C0", alpha=0.6,
                  label="quantization only (k-means only)")
        axis.plot(bits, [100 * pq[1] for _, _, pq in results], "s-", color="C1",
                  label="pruning + quantization (fine-tuned)")
        axis.plot(bits, [100 * pq[0] for _, _, pq in results], "s:", color="C1", alpha=0.6,
                  label="pruning + quantization (k-means only)")
        axis.axhline(100 * dense_accuracy, color="gray", linestyle="--", linewidth=1, label="dense 32-bit")
        axis.set_xlabel("bits per weight (codebook index)")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title("LeNet-300-100 / Fashion-MNIST: accuracy vs bits")
        axis.set_xticks(bits)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
        figure.tight_layout()
        plot_path = os.path.join(out_dir, "bits_ablation.png")
        figure.savefig(plot_path, dpi=120)
        print(f"wrote {plot_path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5, 6, 7, 8])
    parser.add_argument("--dense-epochs", type=int, default=6)
    parser.add_argument("--prune-epochs", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=1, help="centroid fine-tuning epochs per point")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=".")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)

    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    data = ((x_train / 255.0).astype("float32"), y_train), ((x_test / 255.0).astype("float32"), y_test)
    (x_train, y_train), (x_test, y_test) = data

    dense = compile_model(lenet_300_100(), 1e-3)
    dense.fit(x_train, y_train, epochs=args.dense_epochs, batch_size=args.batch_size, verbose=0)
    dense_accuracy = dense.evaluate(x_test, y_test, verbose=0)[1]
    print(f"dense 32-bit: {100 * dense_accuracy:.2f}%  ({time.perf_counter() - start:.0f} s)", flush=True)

    end_step = int(np.ceil(len(x_train) / args.batch_size)) * args.prune_epochs
    schedules = {name: dc_keras.PolynomialDecay(0.0, target, begin_step=0, end_step=end_step, frequency=100)
                 for name, target in LAYER_SPARSITY.items()}
    # prune_low_magnitude wraps (and masks) the layers it is given, like tfmot: prune a copy so that the
    # dense network stays dense for the quantization-only runs.
    dense_copy = keras.models.clone_model(dense)
    dense_copy.set_weights(dense.get_weights())
    pruning = compile_model(
        dc_keras.prune_low_magnitude(dense_copy, pruning_schedule=schedules["ip1"], per_layer=schedules), 5e-4)
    pruning.fit(x_train, y_train, epochs=args.prune_epochs + 1, batch_size=args.batch_size, verbose=0,
                callbacks=[UpdatePruningStep()])
    pruned = compile_model(dc_keras.strip_pruning(pruning), 1e-4)
    pruned_accuracy = pruned.evaluate(x_test, y_test, verbose=0)[1]
    pruned_ratio = dc_keras.compression_report(pruned).total.ratio
    assert dc_keras.compression_report(dense).total.density == 1.0, "the dense network was pruned too"
    print(f"pruned 32-bit: {100 * pruned_accuracy:.2f}%  ({pruned_ratio:.1f}x)  "
          f"({time.perf_counter() - start:.0f} s)", flush=True)

    results = []
    for bits in args.bits:
        q = quantize(dense, bits, data, args.finetune_epochs, args.batch_size)
        pq = quantize(pruned, bits, data, args.finetune_epochs, args.batch_size)
        results.append((bits, q, pq))
        print(f"{bits} bits: Q {100 * q[0]:.2f}% -> {100 * q[1]:.2f}% ({q[2]:.1f}x)   "
              f"P+Q {100 * pq[0]:.2f}% -> {100 * pq[1]:.2f}% ({pq[2]:.1f}x)  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)

    _write_table(results, dense_accuracy, pruned_accuracy, pruned_ratio, args.finetune_epochs, args.out_dir)
    _plot(results, dense_accuracy, args.out_dir)
    print(f"total time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
