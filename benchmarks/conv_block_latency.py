"""Batch-1 latency of block-sparse Conv2D layers through the dc delegate vs its unstructured loops and stock
TFLite (XNNPACK).

Two layers on a 16x16 input: a 1x1 conv 256 -> 256 and a 3x3 SAME conv 64 -> 64, each 90% sparse in aligned
blocks of 16 consecutive input channels of one output channel at one tap (Keras block_size (16, 1)), with a
5-bit (32-entry) codebook. Variants, one thread, batch 1, interleaved rounds, the whole measurement repeated:
  dc (block)         the exporter stores the kernel in the block layout; DcConv2D runs the block loops
  dc (unstructured)  the same sparsity and codebook, pruned weight by weight: the sparse im2col GEMM
  stock int8 dynamic-range and float32, XNNPACK (OpResolverType.AUTO)

    python benchmarks/conv_block_latency.py [--sparsity 0.9] [--block 16] [--runs 200] [--repeats 3]
        [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fc_latency import _int8, _machine, _time  # noqa: E402

BLOCK_NAME, SPARSE_NAME = "dc (block)", "dc (unstructured)"


def _conv_model(in_c, out_c, kernel, size, rng, sparsity, clusters, block):
    """One Conv2D (SAME, bias) on a size x size x in_c input whose kernel is pruned to `sparsity`: in aligned
    blocks of `block` consecutive input channels per output channel and tap, or weight by weight (block 0),
    kept weights drawn from a `clusters`-entry codebook."""
    import keras

    shape = (kernel, kernel, in_c, out_c)
    if block:
        keep = rng.random((kernel, kernel, -(-in_c // block), out_c)) >= sparsity
        mask = np.repeat(keep, block, axis=2)[:, :, :in_c]
    else:
        mask = rng.random(shape) >= sparsity
    codebook = rng.normal(0.0, 0.05, size=clusters).astype(np.float32)
    codebook[codebook == 0.0] = 0.01
    weights = np.where(mask, codebook[rng.integers(0, clusters, size=shape)], 0.0).astype(np.float32)
    model = keras.Sequential([keras.Input((size, size, in_c)), keras.layers.Conv2D(out_c, kernel, padding="same")])
    model.layers[0].set_weights([weights, rng.normal(0.0, 0.1, size=out_c).astype(np.float32)])
    return model


def _case(title, block_model, sparse_model, runs, repeats, tmp, rng) -> dict:
    """Prints the interleaved medians of the four variants (repeated), the dc ratios and the dc outputs'
    error; returns {title, medians_s, max_rel_error}."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from dc_keras import delegate, export_tflite

    files = {}
    for name, model in ((BLOCK_NAME, block_model), (SPARSE_NAME, sparse_model)):
        path = Path(tmp) / f"{title}-{len(files)}.tflite"
        dense_path = path.with_suffix(".dense.tflite")
        report = export_tflite(model, path, dense_path=dense_path)
        files[name] = (path.read_bytes(), dense_path.read_bytes(), report.layers[0].layout_text)
    dc = delegate.load(num_threads=1)
    variants = {name: Interpreter(model_content=files[name][0], experimental_delegates=[dc], num_threads=1)
                for name in (BLOCK_NAME, SPARSE_NAME)}
    for name, content in (("stock int8 dynamic-range, XNNPACK", _int8(block_model)),
                          ("stock float32, XNNPACK", files[BLOCK_NAME][1])):
        variants[name] = Interpreter(model_content=content, num_threads=1,
                                     experimental_op_resolver_type=OpResolverType.AUTO)
    x = rng.standard_normal((1,) + tuple(block_model.inputs[0].shape[1:])).astype(np.float32)
    rounds = [_time(variants, x, runs) for _ in range(repeats)]
    medians = {name: float(np.median([r[0][name] for r in rounds])) for name in variants}
    errors = {}
    for name, model in ((BLOCK_NAME, block_model), (SPARSE_NAME, sparse_model)):
        want = np.asarray(model(x))
        errors[name] = float(np.max(np.abs(rounds[-1][1][name] - want)) / np.max(np.abs(want)))
    forms = [form for op, form in delegate.weight_forms(dc) if op == "DcConv2D"]
    print(f"\n== {title} (batch 1, 1 thread, median of interleaved runs, {repeats} repeats) ==")
    print(f"layouts: {BLOCK_NAME} {files[BLOCK_NAME][2]}, {SPARSE_NAME} {files[SPARSE_NAME][2]}; "
          f"delegate forms {forms}")
    print(f"{'variant':36s} {'median':>10s} {'/ dc block':>11s}")
    for name, seconds in sorted(medians.items(), key=lambda kv: kv[1]):
        print(f"{name:36s} {seconds * 1e3:8.3f} ms {seconds / medians[BLOCK_NAME]:10.2f}x")
    for name in variants:
        if name != BLOCK_NAME:
            per_repeat = [r[0][BLOCK_NAME] / r[0][name] for r in rounds]
            print(f"dc block / {name}: " + ", ".join(f"{v:.3f}" for v in per_repeat) + " per repeat")
    print("dc outputs vs Keras, max relative error: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    return {"title": title, "medians_s": medians, "max_rel_error": errors}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--clusters", type=int, default=32, help="codebook entries (32 = 5 bits)")
    parser.add_argument("--block", type=int, default=16, choices=(4, 8, 16), help="input channels per block")
    parser.add_argument("--runs", type=int, default=200, help="timed invokes per variant and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="whole interleaved measurements per case")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.repeats < 1 or not 0.0 <= args.sparsity < 1.0:
        parser.error("--runs and --repeats must be positive and --sparsity in [0, 1)")
    print(_machine(), flush=True)
    rng = np.random.default_rng(0)
    cases = []
    with tempfile.TemporaryDirectory(prefix="dc_conv_block_") as tmp:
        for in_c, out_c, kernel in ((256, 256, 1), (64, 64, 3)):
            title = (f"{kernel}x{kernel} conv {in_c}->{out_c} on 16x16, {100 * args.sparsity:.0f}% sparse in blocks "
                     f"of {args.block} input channels, {args.clusters}-entry codebook")
            models = [_conv_model(in_c, out_c, kernel, 16, rng, args.sparsity, args.clusters, block)
                      for block in (args.block, 0)]
            cases.append(_case(title, *models, args.runs, args.repeats, tmp, rng))
    if args.json:
        args.json.write_text(json.dumps(cases, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
