"""Deep Compression stages 1+2 on LeNet-300-100 / Fashion-MNIST: prune, then share weights at 6 bits.

1. Train the dense 784-300-100-10 network (the baseline accuracy).
2. Prune with retraining with dc_keras pruning to the paper's per-layer densities (Table 2: ip1/ip2/ip3
   keep about 8% / 9% / 26%), fine-tune, strip the pruning wrappers.
3. Cluster every layer at 6 bits (64 shared weights per layer, the paper's LeNet setting), linear centroid
   initialisation, pruned weights kept at exactly zero; fine-tune the centroids with `model.fit`.
4. Strip the clustering wrappers, check each layer holds at most 64 distinct nonzero values, print the
   paper's Table 2 (P+Q columns) from `dc_keras.compression_report` and the three test accuracies.

Exits with status 1 when the pruned + clustered model is more than --tolerance points (default 0.5) below
the dense baseline.

Usage:  python examples/cluster_lenet_300_100.py [--bits 6] [--dense-epochs 8] [--prune-epochs 6]
        [--cluster-epochs 3] [--save clustered.keras] [--json report.json]
Runs in about three to five minutes on two CPU cores.
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
from _common import compile_model, load_data, prune_with_retraining, train_dense  # noqa: E402  (examples/_common.py)

# Fraction of weights pruned per layer (the paper's Table 2 keeps 8% / 9% / 26%).
LAYER_SPARSITY = {"ip1": 0.92, "ip2": 0.91, "ip3": 0.74}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=6, help="codebook index bits of every layer")
    parser.add_argument("--dense-epochs", type=int, default=8)
    parser.add_argument("--prune-epochs", type=int, default=6, help="epochs while sparsity rises")
    parser.add_argument("--prune-finetune-epochs", type=int, default=2, help="epochs at the final sparsity")
    parser.add_argument("--cluster-epochs", type=int, default=3, help="centroid fine-tuning epochs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--tolerance", type=float, default=0.5, help="allowed accuracy drop, in points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default="", help="save the stripped clustered model to this .keras file")
    parser.add_argument("--json", default="", help="write the compression report as JSON to this file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)

    data = load_data()
    (x_train, y_train), (x_test, y_test) = data
    fit = dict(batch_size=args.batch_size, verbose=2)

    # 1. dense baseline
    model, dense_accuracy = train_dense(data, args.dense_epochs, args.batch_size)

    # 2. pruning with retraining (stage 1)
    pruned = prune_with_retraining(model, data, LAYER_SPARSITY, args.prune_epochs, args.prune_finetune_epochs,
                                   args.batch_size)
    pruned_accuracy = pruned.evaluate(x_test, y_test, verbose=0)[1]
    print(f"pruned test accuracy: {100 * pruned_accuracy:.2f}%", flush=True)

    # 3. trained quantization (stage 2): k-means per layer, then fine-tune the shared centroids
    clustered = dc_keras.cluster_weights(pruned, bits=args.bits, cluster_centroids_init="linear",
                                         preserve_sparsity=True)
    compile_model(clustered, 1e-4)
    before_finetune = clustered.evaluate(x_test, y_test, verbose=0)[1]
    print(f"clustered, before centroid fine-tuning: {100 * before_finetune:.2f}%", flush=True)
    clustered.fit(x_train, y_train, epochs=args.cluster_epochs, **fit)

    final = compile_model(dc_keras.strip_clustering(clustered), 1e-4)
    clustered_accuracy = final.evaluate(x_test, y_test, verbose=0)[1]
    for name in LAYER_SPARSITY:
        kernel = final.get_layer(name).kernel.numpy()
        distinct = len(np.unique(kernel[kernel != 0]))
        kept_zero = np.array_equal(kernel == 0, pruned.get_layer(name).kernel.numpy() == 0)
        assert distinct <= 2 ** args.bits and kept_zero, (name, distinct, kept_zero)

    report = dc_keras.compression_report(final)
    print()
    print(report)
    print(f"\ndense              test accuracy: {100 * dense_accuracy:.2f}%")
    print(f"pruned             test accuracy: {100 * pruned_accuracy:.2f}%")
    print(f"pruned + {args.bits}-bit shared test accuracy: {100 * clustered_accuracy:.2f}%  "
          f"(expected weight storage {report.size_bytes / 1024:.1f} KiB vs "
          f"{report.total.original_bits / 8 / 1024:.1f} KiB dense, {report.total.ratio:.1f}x)")
    drop = 100 * (dense_accuracy - clustered_accuracy)
    print(f"accuracy change vs dense: {-drop:+.2f} points (allowed: -{args.tolerance:.2f}); "
          f"total time {time.perf_counter() - start:.0f} s")
    if args.save:
        final.save(args.save)
        print(f"saved {args.save}")
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(report.to_json(indent=2))
        print(f"wrote {args.json}")
    if drop > args.tolerance:
        print(f"FAIL: pruned + clustered model lost {drop:.2f} points (> {args.tolerance})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
