"""Batch-1 latency of a Deep-Compressed fully-connected layer through the dc delegate vs stock TFLite.

One process, one thread, batch 1, medians. Variants of the same layer:
  dc delegate (sparse P+Q form, 5-bit codebook), stock float32 and dynamic-range int8, each with XNNPACK
  (OpResolverType.AUTO) and with TFLite's builtin kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES).
Targets: dc <= 1/2 of the fastest stock variant (stretch 1/3) on a 4096x4096 ~90%-sparse layer,
resident weight bytes <= 1/8 of dense float, LeNet-300-100 end to end faster than the fastest stock variant
(two LeNet cases: 92% sparse with the codebook size of --clusters everywhere, and the per-layer pruning and
codebooks of dc-compress's default run). Two more cases prune the same layer in aligned blocks (--block long,
of consecutive inputs and of consecutive outputs), which the exporter stores in its block-sparse layout and
the delegate runs with its SIMD block kernels: targets dc <= 1/3 of the fastest stock variant on AVX-512 CPUs,
<= 1/2 on AVX2-only ones.

    python benchmarks/fc_latency.py [--size 4096] [--sparsity 0.9] [--block 16] [--runs 200] [--repeats 3]
        [--json out.json]

Variants are timed in interleaved rounds so that load from other processes hits them alike.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402


def _clustered(rng, shape, sparsity, clusters):
    codebook = rng.normal(0.0, 0.05, size=clusters).astype(np.float32)
    weights = codebook[rng.integers(0, clusters, size=shape)]
    weights[rng.random(shape) < sparsity] = 0.0
    return weights


def _block_clustered(rng, shape, sparsity, clusters, block):
    """Keras kernel of `shape` (inputs, outputs) pruned to `sparsity` in aligned blocks: block = ("inputs", L)
    keeps or drops L consecutive inputs of one output together (blocks of L x 1 in the kernel), ("outputs", L)
    L consecutive outputs of one input (1 x L). Kept weights take random codebook values."""
    axis, length = block
    n_in, n_out = shape
    grid = (-(-n_in // length), n_out) if axis == "inputs" else (n_in, -(-n_out // length))
    keep = rng.random(grid) >= sparsity
    mask = np.repeat(keep, length, axis=0 if axis == "inputs" else 1)[:n_in, :n_out]
    codebook = rng.normal(0.0, 0.05, size=clusters).astype(np.float32)
    codebook[codebook == 0.0] = 0.01
    return np.where(mask, codebook[rng.integers(0, clusters, size=shape)], 0.0).astype(np.float32)


def _dense_model(sizes, rng, sparsity, clusters, activations, block=None):
    """Dense layers of `sizes` with pruned, shared weights; `sparsity` / `clusters` are one value for every
    layer or one per layer."""
    import keras

    per_layer = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * (len(sizes) - 1)  # noqa: E731
    layers = [keras.Input((sizes[0],))]
    for units, activation in zip(sizes[1:], activations):
        layers.append(keras.layers.Dense(units, activation=activation))
    model = keras.Sequential(layers)
    for layer, n_in, n_out, layer_sparsity, layer_clusters in zip(model.layers, sizes[:-1], sizes[1:],
                                                                   per_layer(sparsity), per_layer(clusters)):
        kernel = (_clustered(rng, (n_in, n_out), layer_sparsity, layer_clusters) if block is None else
                  _block_clustered(rng, (n_in, n_out), layer_sparsity, layer_clusters, block))
        layer.set_weights([kernel,
                           rng.normal(0.0, 0.1, size=n_out).astype(np.float32)])
    return model


def _int8(model) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range int8 weights
    return converter.convert()


def _interpreters(compressed: bytes, dense: bytes, int8: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from dc_keras import delegate

    dc = delegate.load(num_threads=1)
    variants = {"dc delegate (sparse P+Q)": Interpreter(model_content=compressed, experimental_delegates=[dc],
                                                        num_threads=1)}
    for name, content in (("float32", dense), ("int8 dynamic-range", int8)):
        for label, resolver in (("XNNPACK", OpResolverType.AUTO),
                                ("builtin", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)):
            variants[f"stock {name}, {label}"] = Interpreter(model_content=content, num_threads=1,
                                                             experimental_op_resolver_type=resolver)
    return variants, dc


def _time(variants, x, runs, block=10):
    """Median seconds per invoke of each variant, measured in interleaved blocks of `block` invokes."""
    prepared = {}
    for name, interpreter in variants.items():
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], x)
        for _ in range(5):  # warm-up: caches, lazy packing
            interpreter.invoke()
        prepared[name] = interpreter
    samples = {name: [] for name in variants}
    for _ in range(max(1, runs // block)):
        for name, interpreter in prepared.items():
            for _ in range(block):
                start = time.perf_counter()
                interpreter.invoke()
                samples[name].append(time.perf_counter() - start)
    outputs = {name: interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()
               for name, interpreter in prepared.items()}
    return {name: float(np.median(s)) for name, s in samples.items()}, outputs


DC_NAME = "dc delegate (sparse P+Q)"


def _dc_over_fastest(medians):
    stock = {k: v for k, v in medians.items() if k != DC_NAME}
    fastest = min(stock, key=stock.get)
    return medians[DC_NAME] / stock[fastest], fastest


def _run_case(title, model, runs, repeats, tmp, rng):
    from dc_keras import delegate, export_tflite

    path, dense_path = Path(tmp) / f"{title}.tflite", Path(tmp) / f"{title}_dense.tflite"
    report = export_tflite(model, path, dense_path=dense_path)
    compressed, dense = path.read_bytes(), dense_path.read_bytes()
    int8 = _int8(model)
    variants, dc = _interpreters(compressed, dense, int8)
    x = rng.standard_normal((1, model.inputs[0].shape[-1])).astype(np.float32)
    # The whole interleaved measurement is repeated: on a shared machine the ratio itself moves from one
    # measurement to the next, so the spread is printed and the median ratio is the figure of record.
    rounds = [_time(variants, x, runs) for _ in range(repeats)]
    outputs = rounds[-1][1]
    ratios = [_dc_over_fastest(medians)[0] for medians, _ in rounds]
    medians = {name: float(np.median([r[0][name] for r in rounds])) for name in variants}
    want = np.asarray(model(x), dtype=np.float32)
    dc_out = outputs[DC_NAME]
    rel_error = float(np.max(np.abs(dc_out - want)) / np.max(np.abs(want)))
    resident = delegate.resident_weight_bytes(dc)
    dense_weight_bytes = sum(l.weights for l in report.layers) * 4
    sizes = {DC_NAME: len(compressed)}
    for name in medians:
        if name.startswith("stock float32"):
            sizes[name] = len(dense)
        elif name.startswith("stock int8"):
            sizes[name] = len(int8)
    return {"title": title, "medians_s": medians, "dc_over_fastest_stock_per_repeat": ratios, "file_bytes": sizes,
            "resident_weight_bytes": resident, "dense_weight_bytes": dense_weight_bytes,
            "max_rel_error_vs_keras": rel_error}


def _print_case(case):
    medians = case["medians_s"]
    ratios = case["dc_over_fastest_stock_per_repeat"]
    _, fastest = _dc_over_fastest(medians)
    print(f"\n== {case['title']} (batch 1, 1 thread, median of interleaved runs, {len(ratios)} repeats) ==")
    print(f"{'variant':36s} {'median':>10s} {'vs dc':>8s} {'.tflite':>12s}")
    for name, seconds in sorted(medians.items(), key=lambda kv: kv[1]):
        print(f"{name:36s} {seconds * 1e3:8.3f} ms {seconds / medians[DC_NAME]:7.2f}x "
              f"{case['file_bytes'][name]:10d} B")
    ratio = float(np.median(ratios))
    print(f"dc / fastest stock ({fastest}): median {ratio:.3f} over repeats "
          f"[{', '.join(f'{r:.3f}' for r in ratios)}]")
    print(f"resident weight bytes: dc {case['resident_weight_bytes']} B vs dense float {case['dense_weight_bytes']} B "
          f"({case['resident_weight_bytes'] / case['dense_weight_bytes']:.4f}, target <= 0.125)")
    print(f"dc output vs Keras: max relative error {case['max_rel_error_vs_keras']:.2e}")
    case["dc_over_fastest_stock"] = ratio
    case["fastest_stock"] = fastest
    return ratio


def _machine() -> str:
    """CPU model, SIMD features, the delegate's SIMD paths (benchmarks/machine.py's header) and the load
    average: what a reader needs to compare figures from two runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import machine

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return "\n".join([*machine.header_lines(), f"load average {load}"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096, help="square FC layer size")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--clusters", type=int, default=32, help="codebook entries (32 = 5 bits)")
    parser.add_argument("--block", type=int, default=16, choices=(4, 8, 16),
                        help="block length of the block-sparse FC cases")
    parser.add_argument("--runs", type=int, default=200, help="timed invokes per variant")
    parser.add_argument("--repeats", type=int, default=3,
                        help="whole interleaved measurements per case; the median ratio is reported")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.repeats < 1 or args.size < 1 or not 0.0 <= args.sparsity < 1.0:
        parser.error("--runs, --repeats and --size must be positive and --sparsity in [0, 1)")

    print(_machine(), flush=True)
    rng = np.random.default_rng(0)
    cases = []
    with tempfile.TemporaryDirectory(prefix="dc_fc_latency_") as tmp:
        layer = _dense_model([args.size, args.size], rng, args.sparsity, args.clusters, [None])
        cases.append(_run_case(f"FC {args.size}x{args.size}, {100 * args.sparsity:.0f}% sparse, "
                               f"{args.clusters}-entry codebook", layer, args.runs, args.repeats, tmp, rng))
        for axis in ("inputs", "outputs"):
            block = _dense_model([args.size, args.size], rng, args.sparsity, args.clusters, [None],
                                 block=(axis, args.block))
            cases.append(_run_case(f"FC {args.size}x{args.size}, {100 * args.sparsity:.0f}% sparse in blocks of "
                                   f"{args.block} consecutive {axis}, {args.clusters}-entry codebook", block,
                                   args.runs, args.repeats, tmp, rng))
        lenet = _dense_model([784, 300, 100, 10], rng, 0.92, args.clusters, ["relu", "relu", None])
        cases.append(_run_case("LeNet-300-100 end to end, 92% sparse", lenet, args.runs * 5, args.repeats, tmp,
                               rng))
        # The layout dc-compress's default run gives LeNet-300-100 (its report.txt): fewer nonzeros and
        # centroids than the uniform case above. Random weights: the latency does not depend on training.
        lenet_dc = _dense_model([784, 300, 100, 10], rng, [0.94, 0.92, 0.75], [16, 16, 32], ["relu", "relu", None])
        cases.append(_run_case("LeNet-300-100 end to end, as dc-compress prunes it (94/92/75%, 16/16/32 "
                               "centroids)", lenet_dc, args.runs * 5, args.repeats, tmp, rng))
    fc_ratio = _print_case(cases[0])
    block_ratios = [_print_case(case) for case in cases[1:3]]
    lenet_ratios = [_print_case(case) for case in cases[3:]]
    resident_ok = cases[0]["resident_weight_bytes"] <= cases[0]["dense_weight_bytes"] / 8
    lenet_text = ", ".join(f"{'met' if r < 1 else 'NOT met'} ({r:.3f})" for r in lenet_ratios)
    print("\ntargets: FC dc/fastest stock <= 0.5: " + ("met" if fc_ratio <= 0.5 else "NOT met") +
          f" ({fc_ratio:.3f}; stretch 0.333 " + ("met" if fc_ratio <= 1 / 3 else "not met") + ")"
          f"; resident <= 1/8 of dense: {'met' if resident_ok else 'NOT met'}"
          f"; LeNet faster than fastest stock (uniform 92% / dc-compress layout): {lenet_text}")
    print("block targets: FC dc/fastest stock <= 1/3 on AVX-512, <= 1/2 on AVX2 only (blocks of inputs / "
          "outputs): " + ", ".join(f"{r:.3f}" for r in block_ratios))
    if args.json:
        args.json.write_text(json.dumps(cases, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
