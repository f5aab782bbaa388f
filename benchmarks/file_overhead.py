"""Where the bytes of a compressed .tflite go, and what each of dc_keras.export.slim's cuts saves.

    python benchmarks/file_overhead.py [--model lenet300|lenet5]

Builds the model with seeded random weights, prunes and weight-shares them in NumPy (dc-compress's preset
sparsities and bits; no training: sizes only), exports it with the cuts switched off and float32 biases,
then applies the cuts one at a time to the same flatbuffer and prints the file size after each, with the byte
breakdown (weights, biases, other constants and metadata, graph) before and after. Every step's file is
loaded by stock ai-edge-litert (the dc ops through our delegate) and must give the same outputs as the
first, except after the float16 biases, whose relative deviation is printed (and must stay below 1e-3).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _shared(kernel: np.ndarray, sparsity: float, bits: int) -> np.ndarray:
    """`kernel` magnitude-pruned to `sparsity`, its survivors replaced by 2^bits quantile centroids."""
    flat = kernel.reshape(-1).copy()
    keep = np.abs(flat) >= np.quantile(np.abs(flat), sparsity)
    values = flat[keep]
    centroids = np.quantile(values, (np.arange(1 << bits) + 0.5) / (1 << bits))
    flat[keep] = centroids[np.abs(values[:, None] - centroids[None, :]).argmin(axis=1)]
    flat[~keep] = 0.0
    return flat.reshape(kernel.shape).astype(np.float32)


def build(model_name: str):
    """The built-in model with random weights pruned and shared as its preset says."""
    import keras

    from dc_keras import presets

    keras.utils.set_random_seed(0)
    model = presets.builtin_model(model_name)
    preset = presets.BUILTIN_PRESETS[model_name]
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.name in preset["sparsity"]:
            kernel = np.asarray(layer.kernel.numpy())
            layer.kernel.assign(_shared(kernel, preset["sparsity"][layer.name], preset["bits"][layer.name]))
            layer.bias.assign(rng.normal(0, 0.05, layer.bias.shape).astype(np.float32))
    return model


def _outputs(data: bytes, x: np.ndarray) -> np.ndarray:
    from dc_keras import delegate

    interpreter = delegate.make_interpreter(model_content=data)
    runner = interpreter.get_signature_runner()
    (output,) = runner(**{runner.get_input_details().popitem()[0]: x}).values()
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lenet300", choices=("lenet300", "lenet5"))
    args = parser.parse_args(argv)

    import dc_keras
    from dc_keras.export import exporter, flatbuffer, slim
    from dc_keras.export.report import format_breakdown, report_from_model

    model = build(args.model)
    x = np.random.default_rng(1).random((3, 28, 28), dtype=np.float32)
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "m.tflite")
        dc_keras.export_tflite(model, path, slim_graph=False, bias_dtype="float32")
        before = open(path, "rb").read()
    tflite_model = flatbuffer.load(before)
    reference = _outputs(before, x)
    print(f"{args.model}: before the cuts {len(before)} B")
    print("  " + format_breakdown(report_from_model(flatbuffer.load(before), len(before)).breakdown))
    def blob_buffers(m):
        return {int(t.buffer) for sg in m.subgraphs for t in sg.tensors if flatbuffer.text(t.name).endswith("/dc_blob")}

    steps = [("fold the dynamic Flatten reshape", lambda m: (slim.fold_static_reshapes(m), slim.remove_dead_ops(m))),
             ("share empty buffers", slim.share_empty_buffers),
             ("drop converter metadata and description", slim.drop_informational_metadata),
             ("inputs/outputs named by signature keys", slim.name_io_after_signature),
             ("drop empty quantization tables", slim.drop_empty_quantization),
             ("drop internal shape signatures", slim.drop_internal_shape_signatures),
             ("drop has_rank where the shape is given", slim.drop_redundant_has_rank),
             ("drop the subgraph name", slim.drop_subgraph_names),
             ("4-byte aligned blobs", "blobs"),
             ("4-byte aligned dc op biases", "biases"),
             ("float16 dc op biases", exporter._store_biases_as_float16)]
    size = len(before)
    byte_buffers = ()
    data = before
    rounded = False
    for label, cut in steps:
        if cut == "blobs":
            byte_buffers = "blobs"
        elif cut == "biases":
            byte_buffers = "blobs and biases"
        else:
            cut(tflite_model)
            rounded = rounded or cut is exporter._store_biases_as_float16
        flatbuffer.remove_unused(tflite_model)
        flatbuffer.shorten_internal_names(tflite_model, keep_suffix="/dc_blob")
        aligned = {(): (), "blobs": blob_buffers(tflite_model),
                   "blobs and biases": exporter._byte_read_buffers(tflite_model)}[byte_buffers]
        data = flatbuffer.serialize(tflite_model, byte_buffers=aligned)
        tflite_model = flatbuffer.load(data)
        got = _outputs(data, x)
        if rounded:
            deviation = float(np.max(np.abs(got - reference)) / np.max(np.abs(reference)))
            print(f"  {label:<44} {len(data):>7} B  saves {size - len(data):>5} B  relative deviation: "
                  f"{deviation:.1e}")
            if not deviation < 1e-3:
                return 1
        else:
            same = np.array_equal(got, reference)
            print(f"  {label:<44} {len(data):>7} B  saves {size - len(data):>5} B  same outputs: {same}")
            if not same:
                return 1
        size = len(data)
    print(f"after the cuts {len(data)} B ({len(before) - len(data)} B saved)")
    print("  " + format_breakdown(report_from_model(flatbuffer.load(data), len(data)).breakdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
