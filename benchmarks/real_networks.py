"""Export coverage on networks users ship: which weighted layers end as dc ops, and how small the file gets.

Each network is built as a new user would (keras.applications MobileNetV2 with weights=None, dc_keras's
CIFAR ResNet, an Embedding text classifier), given BatchNormalization statistics as after training (random
moving means/variances, gammas and betas), then compressed through the public API only:

  prune_low_magnitude(ConstantSparsity(--sparsity)) + one fit step with UpdatePruningStep -> strip_pruning
  -> cluster_weights(bits=--bits) -> strip_clustering -> export_tflite(verify=True, dense_path=...)

and the written file is inspected: dc ops, stock CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / GATHER ops
that still hold >= 1024 weights (with the exporter's reason), the compressed file against the converter's
dense float .tflite, and the delegate's largest relative deviation from Keras (export verification).

Usage:  python benchmarks/real_networks.py [--networks mobilenet_v2 resnet20 embedding] [--sparsity 0.75]
                                          [--bits 4] [--json out.json]
No training and no dataset: this measures coverage and size, not accuracy (examples/ train real models).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

STOCK_WEIGHTED = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "GATHER": 0}
"""Stock builtins that carry weights -> the input index of their weights tensor."""

LARGE = 1024
"""A stock weighted op with at least this many weights counts as a miss."""


def mobilenet_v2():
    """keras.applications.MobileNetV2, alpha 0.35, 32x32x3 inputs, 10 classes, no pretrained weights."""
    import keras
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input shape not in [96, 128, 160, 192, 224]": intended here
        return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10,
                                              classifier_activation=None)


def resnet20():
    """dc_keras.models.resnet(20): Conv-BN-ReLU blocks with residual Adds, 32x32x3 inputs."""
    from dc_keras import models

    return models.resnet(20)


def embedding():
    """Token ids (64 per example, vocabulary 5000) -> Embedding 64 -> average pooling -> Dense 64 -> 4."""
    import keras

    ids = keras.Input((64,), dtype="int32", name="ids")
    x = keras.layers.Embedding(5000, 64, name="embed")(ids)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc1")(x)
    return keras.Model(ids, keras.layers.Dense(4, name="fc2")(x), name="embedding_classifier")


NETWORKS = {"mobilenet_v2": mobilenet_v2, "resnet20": resnet20, "embedding": embedding}


def _trained_like_batchnorm(model, rng) -> int:
    """Gives every BatchNormalization layer statistics as after training; returns how many there are."""
    import keras

    count = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[-1]
            values = {"gamma": rng.uniform(0.5, 1.5, channels), "beta": rng.normal(0, 0.1, channels),
                      "moving_mean": rng.normal(0, 0.2, channels), "moving_variance": rng.uniform(0.3, 2.0, channels)}
            layer.set_weights([values[w.name].astype(np.float32) for w in layer.weights])
            count += 1
    return count


def _sample_batch(model, rng, n=8):
    spec = model.inputs[0]
    shape = (n, *spec.shape[1:])
    if "int" in str(spec.dtype):
        return rng.integers(0, 1000, size=shape).astype(np.int32)
    return rng.normal(size=shape).astype(np.float32)


def compress_through_public_api(model, sparsity: float, bits: int, rng):
    """prune -> strip -> cluster -> strip, as the README shows, with one training step for the masks."""
    import keras

    import dc_keras
    from dc_keras.callbacks import UpdatePruningStep

    x = _sample_batch(model, rng)
    y = rng.integers(0, model.output_shape[-1], size=len(x))
    # frequency=1: masks are computed at the first training step (the default 100 would wait 100 steps)
    pruned = dc_keras.prune_low_magnitude(model, pruning_schedule=dc_keras.ConstantSparsity(sparsity, 0, frequency=1))
    # learning rate 0: the step only applies the pruning masks, the surviving weights stay as they are
    pruned.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, epochs=1, batch_size=len(x), verbose=0, callbacks=[UpdatePruningStep()])
    clustered = dc_keras.cluster_weights(dc_keras.strip_pruning(pruned), bits=bits)
    return dc_keras.strip_clustering(clustered), x


def stock_weighted_ops(tflite: bytes) -> list:
    """Stock weighted ops left in a .tflite: [{"op", "weights", "output"}], largest first."""
    from tensorflow.lite.python import schema_py_generated as schema

    from dc_keras.export import flatbuffer

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = flatbuffer.load(tflite)
    found = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            name = names.get(flatbuffer.builtin_code(model, op))
            if name not in STOCK_WEIGHTED:
                continue
            weights = subgraph.tensors[int(op.inputs[STOCK_WEIGHTED[name]])]
            if weights.buffer == 0 or model.buffers[weights.buffer].data is None:
                continue
            output = subgraph.tensors[int(op.outputs[0])].name
            found.append({"op": name, "weights": int(np.prod(weights.shape)),
                          "output": output.decode() if isinstance(output, bytes) else str(output)})
    return sorted(found, key=lambda row: -row["weights"])


def measure(name: str, sparsity: float, bits: int, seed: int = 0) -> dict:
    """Builds, compresses and exports one network; returns its coverage and size figures."""
    import dc_keras

    rng = np.random.default_rng(seed)
    model = NETWORKS[name]()
    batchnorms = _trained_like_batchnorm(model, rng)
    start = time.perf_counter()
    final, sample = compress_through_public_api(model, sparsity, bits, rng)
    with tempfile.TemporaryDirectory() as directory:
        path, dense_path = Path(directory) / "m.tflite", Path(directory) / "dense.tflite"
        report = dc_keras.export_tflite(final, path, verify=True, dense_path=dense_path, sample_inputs=sample)
        tflite, dense = path.read_bytes(), dense_path.read_bytes()
    stock = stock_weighted_ops(tflite)
    large = [row for row in stock if row["weights"] >= LARGE]
    reasons = {entry["layer"]: entry["reason"] for entry in report.stock}
    return {
        "network": name, "batchnorm_layers": batchnorms, "sparsity": sparsity, "bits": bits,
        "dc_ops": len(report.layers), "stock_weighted_ops": len(stock), "stock_large_ops": len(large),
        "stock_large_weights": sum(row["weights"] for row in large),
        "largest_stock": large[:5], "stock_reasons": dict(list(reasons.items())[:5]),
        "compressed_bytes": len(tflite), "dense_bytes": len(dense), "ratio": len(dense) / len(tflite),
        "max_rel_error": report.verification["max_rel_error"], "tolerance": report.verification["tolerance"],
        "seconds": round(time.perf_counter() - start, 1),
    }


def format_table(rows) -> str:
    """The measured rows as a Markdown table."""
    lines = ["| network | BN layers | dc ops | stock weighted ops (>= 1024 weights) | dense .tflite | "
             "compressed | ratio | delegate vs Keras (tolerance) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['network']} ({r['sparsity']:.0%} pruned, {r['bits']} bits) | {r['batchnorm_layers']} | "
                     f"{r['dc_ops']} | {r['stock_weighted_ops']} ({r['stock_large_ops']}) | {r['dense_bytes']:,} B | "
                     f"{r['compressed_bytes']:,} B | {r['ratio']:.2f}x | {r['max_rel_error']:.1e} "
                     f"({r['tolerance']:.1e}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command-line entry: measure the chosen networks and print the table (and the largest misses)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--sparsity", type=float, default=0.75)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    if not 0 <= args.sparsity < 1:
        parser.error(f"--sparsity must be in [0, 1), got {args.sparsity}")
    rows = []
    for name in args.networks:
        print(f"real_networks: {name} ...", file=sys.stderr, flush=True)
        rows.append(measure(name, args.sparsity, args.bits))
    print(format_table(rows))
    for r in rows:
        for miss in r["largest_stock"]:
            print(f"  {r['network']}: stock {miss['op']} with {miss['weights']:,} weights ({miss['output']})")
        for layer, reason in r["stock_reasons"].items():
            print(f"  {r['network']}: left stock: {layer}: {reason}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
