"""Baselines: the strongest compression a user gets today from stock TensorFlow tooling, no dc_keras.

For LeNet-300-100 and LeNet-5 (Caffe variant) on Fashion-MNIST this runs what tfmot's guides recommend:

    tf_keras dense training
    -> tfmot prune_low_magnitude to a uniform target sparsity (default 90%) with fine-tuning -> strip
    -> tfmot sparsity-preserving clustering (16 or 32 clusters) with fine-tuning -> strip
    -> tf.lite conversion: plain float, Optimize.EXPERIMENTAL_SPARSITY, dynamic-range int8
       (Optimize.DEFAULT) and int8 + sparsity; plus the dense float (and dense int8) .tflite

and measures each file raw, under gzip -9 and under xz -9 (python's gzip / lzma at those presets),
the test accuracy of each .tflite run by the ai_edge_litert interpreter, and the ratio
dense-float-size / size. A .tflite file stores weights as flat arrays, so pruned and clustered weights
only get small once a general-purpose compressor sees their zeros and repeated values: that is the
gap dc_keras closes.

Deliberately independent of dc_keras (own IDX reader, own models, tf_keras + tfmot only) so that the
comparison stays honest whatever state our code is in; only the finished files are written with
dc_keras.atomic's writer. Importable: the pipeline calls
`baseline_results(...)` and `format_table(...)` to print these figures beside its own.

    python benchmarks/baselines.py --model lenet300 --json /tmp/baselines.json
"""
from __future__ import annotations

import argparse
import functools
import gzip
import json
import lzma
import os
import struct
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
MODEL_NAMES = ("lenet300", "lenet5")

# Epoch defaults keep LeNet-300-100 well under 5 minutes on 2 shared cores; LeNet-5's convolutions cost
# about 10x more per epoch, so it gets fewer.
DEFAULT_EPOCHS = {
    "lenet300": {"dense": 10, "prune": 6, "cluster": 3},
    "lenet5": {"dense": 6, "prune": 4, "cluster": 2},
}

# Conversion variants measured for the pruned + clustered model: name -> tf.lite.Optimize member names.
COMPRESSED_VARIANTS = (
    ("pc_float", ()),
    ("pc_float_sparsity", ("EXPERIMENTAL_SPARSITY",)),
    ("pc_int8", ("DEFAULT",)),
    ("pc_int8_sparsity", ("DEFAULT", "EXPERIMENTAL_SPARSITY")),
)
DENSE_VARIANTS = (
    ("dense_float", ()),
    ("dense_int8", ("DEFAULT",)),
)


# --------------------------------------------------------------------------------------------------
# Data

def _read_idx(path: str) -> np.ndarray:
    """Read one gzip-compressed IDX file (the MNIST container format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: too short to be an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {body.size} values")
    return body.reshape(shape)


def load_fashion_mnist(data_dir: Optional[str] = None) -> Tuple[Tuple[np.ndarray, np.ndarray],
                                                                Tuple[np.ndarray, np.ndarray]]:
    """((x_train, y_train), (x_test, y_test)) with x float32 in [0, 1], shape (n, 28, 28, 1); y int64.

    Reads the Debian package's IDX files (`dataset-fashion-mnist`); `data_dir` or the environment variable
    DC_KERAS_FASHION_MNIST_DIR point elsewhere.
    """
    data_dir = data_dir or os.environ.get("DC_KERAS_FASHION_MNIST_DIR", DEFAULT_DATA_DIR)
    names = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
             "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}
    missing = [n for n in names.values() if not os.path.exists(os.path.join(data_dir, n))]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files {missing} not found in {data_dir}: install the Debian package "
            "dataset-fashion-mnist (bash .ci/setup does) or set DC_KERAS_FASHION_MNIST_DIR")
    arrays = {key: _read_idx(os.path.join(data_dir, name)) for key, name in names.items()}
    x_train = (arrays["x_train"].astype(np.float32) / 255.0)[..., None]
    x_test = (arrays["x_test"].astype(np.float32) / 255.0)[..., None]
    return ((x_train, arrays["y_train"].astype(np.int64)), (x_test, arrays["y_test"].astype(np.int64)))


# --------------------------------------------------------------------------------------------------
# Models (tf_keras, because tfmot 0.8 only wraps tf_keras layers)

def build_model(model_name: str):
    """A fresh, uncompiled tf_keras model: "lenet300" (784-300-100-10) or "lenet5" (Caffe LeNet-5)."""
    import tf_keras

    layers = tf_keras.layers
    if model_name == "lenet300":
        return tf_keras.Sequential([
            layers.Input((28, 28, 1)),
            layers.Flatten(),
            layers.Dense(300, activation="relu", name="ip1"),
            layers.Dense(100, activation="relu", name="ip2"),
            layers.Dense(10, name="ip3"),
        ], name="lenet_300_100")
    if model_name == "lenet5":
        # Caffe's lenet_train_test.prototxt: no non-linearity after the convolutions, ReLU after ip1 only.
        return tf_keras.Sequential([
            layers.Input((28, 28, 1)),
            layers.Conv2D(20, 5, name="conv1"),
            layers.MaxPooling2D(2, 2),
            layers.Conv2D(50, 5, name="conv2"),
            layers.MaxPooling2D(2, 2),
            layers.Flatten(),
            layers.Dense(500, activation="relu", name="ip1"),
            layers.Dense(10, name="ip2"),
        ], name="lenet5")
    raise ValueError(f"unknown model {model_name!r}: choose one of {', '.join(MODEL_NAMES)}")


def _compile(model, learning_rate: float):
    import tf_keras

    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def _kernel_sparsity(model) -> Dict[str, float]:
    """Fraction of exact zeros in each kernel: confirms pruning survived clustering and stripping."""
    return {layer.name: float(np.mean(layer.get_weights()[0] == 0.0))
            for layer in model.layers if layer.get_weights() and layer.get_weights()[0].ndim >= 2}


def _distinct_values(model) -> Dict[str, int]:
    """Number of distinct values per kernel: confirms clustering (at most clusters + the zero)."""
    return {layer.name: int(np.unique(layer.get_weights()[0]).size)
            for layer in model.layers if layer.get_weights() and layer.get_weights()[0].ndim >= 2}


# --------------------------------------------------------------------------------------------------
# TFLite conversion and measurement

def convert(model, optimizations: Sequence[str] = ()) -> bytes:
    """Convert a tf_keras model to .tflite bytes with the given tf.lite.Optimize member names."""
    import tensorflow as tf

    # A concrete function with a dynamic batch is the conversion path that works for tf_keras models
    # whatever Keras version `tf.keras` resolves to.
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="input")

    def serve(x):
        return model(x, training=False)

    function = tf.function(serve, autograph=False).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    converter.optimizations = [getattr(tf.lite.Optimize, name) for name in optimizations]
    return converter.convert()


def tflite_accuracy(tflite_bytes: bytes, x: np.ndarray, y: np.ndarray, batch_size: int = 1000,
                    use_default_delegates: bool = True) -> float:
    """Top-1 accuracy of a .tflite model run by the ai_edge_litert interpreter.

    With `use_default_delegates` the interpreter applies XNNPACK as it does for users; without, only the
    builtin kernels run.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (OpResolverType.AUTO if use_default_delegates
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter = Interpreter(model_content=tflite_bytes, experimental_op_resolver_type=resolver)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    correct = 0
    allocated_for = None
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size].astype(np.float32)
        if allocated_for != batch.shape:
            interpreter.resize_tensor_input(input_index, batch.shape)
            interpreter.allocate_tensors()
            allocated_for = batch.shape
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        logits = interpreter.get_tensor(output_index)
        correct += int(np.sum(np.argmax(logits, axis=-1) == y[start:start + batch_size]))
    return correct / len(x)


def measured_accuracy(tflite_bytes: bytes, x: np.ndarray, y: np.ndarray) -> Tuple[float, str]:
    """(accuracy, how it ran): the default interpreter first, builtin kernels only if XNNPACK refuses.

    XNNPACK fails to prepare some sparse (EXPERIMENTAL_SPARSITY) convolutions; users of such a file hit
    the same error, so the fallback is recorded next to the figure rather than hidden.
    """
    try:
        return tflite_accuracy(tflite_bytes, x, y), "default (XNNPACK)"
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0][:160]
        return (tflite_accuracy(tflite_bytes, x, y, use_default_delegates=False),
                f"builtin only; default interpreter failed: {first_line}")


def compressed_sizes(data: bytes) -> Dict[str, int]:
    """Size in bytes raw, under gzip -9 and under xz -9 (python's gzip / lzma at those presets)."""
    return {"raw": len(data),
            "gzip": len(gzip.compress(data, compresslevel=9)),
            "xz": len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9))}


# --------------------------------------------------------------------------------------------------
# The baseline run

def baseline_results(model_name: str = "lenet300", epochs: Optional[int] = None,
                     prune_epochs: Optional[int] = None, cluster_epochs: Optional[int] = None,
                     sparsity: float = 0.9, clusters: int = 16, batch_size: int = 128,
                     learning_rate: float = 1e-3, data=None, data_dir: Optional[str] = None,
                     out_dir: Optional[str] = None, seed: int = 0, verbose: int = 1,
                     variants: Optional[Sequence[str]] = None) -> dict:
    """Run the tfmot prune -> cluster -> convert baseline for one model and measure every .tflite.

    Args:
      model_name: "lenet300" or "lenet5".
      epochs, prune_epochs, cluster_epochs: dense training / pruning fine-tune / clustering fine-tune
        epochs; None takes DEFAULT_EPOCHS[model_name].
      sparsity: final uniform sparsity of every kernel (tfmot PolynomialDecay from 0).
      clusters: clusters per kernel for sparsity-preserving clustering (16 or 32 are tfmot's usual).
      data: ((x_train, y_train), (x_test, y_test)) as from `load_fashion_mnist`; None loads Fashion-MNIST.
      out_dir: when given, every .tflite is written there as <model>_<variant>.tflite.
      verbose: Keras fit verbosity (0 silent, 1 progress bars, 2 one line per epoch).
      variants: names of the .tflite variants to measure (default all; "dense_float" is always measured,
        being the reference of every ratio).

    Returns:
      A JSON-serialisable dict: settings, Keras accuracies per stage, kernel sparsity and distinct
      values after stripping, and "variants": a list of {name, raw, gzip, xz, ratio_raw, ratio_gzip,
      ratio_xz, accuracy} where every ratio is dense-float raw size / that size; "best" names the variant
      and compressor with the largest ratio.
    """
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    epochs, prune_epochs, cluster_epochs, wanted = _checked_settings(model_name, sparsity, epochs, prune_epochs,
                                                                     cluster_epochs, variants)

    data = data if data is not None else load_fashion_mnist(data_dir)
    (x_train, y_train), (x_test, y_test) = data
    tf_keras.utils.set_random_seed(seed)
    timings = {}

    stage = functools.partial(_stage, model_name, verbose)
    # 1. dense training
    start = stage(f"dense training ({epochs} epochs)")
    model, dense_accuracy, dense_files = _train_dense(model_name, data, epochs, batch_size, learning_rate, verbose,
                                                      wanted)
    timings["dense"] = time.perf_counter() - start

    # 2. magnitude pruning, sparsity ramped over the first 2/3 of the fine-tuning steps, then held
    start = stage(f"tfmot prune_low_magnitude to {sparsity:.0%} ({prune_epochs} epochs)")
    pruned = _tfmot_prune(model, x_train, y_train, sparsity, prune_epochs, batch_size, learning_rate, verbose)
    pruned_accuracy = float(pruned.evaluate(x_test, y_test, verbose=0)[1])
    timings["prune"] = time.perf_counter() - start

    # 3. sparsity-preserving clustering, centroids fine-tuned at a low rate as tfmot's guide does
    start = stage(f"tfmot cluster_weights {clusters} clusters, preserve_sparsity ({cluster_epochs} epochs)")
    clustered = _tfmot_cluster(pruned, x_train, y_train, clusters, cluster_epochs, batch_size, learning_rate,
                               verbose)
    clustered_accuracy = float(clustered.evaluate(x_test, y_test, verbose=0)[1])
    timings["cluster"] = time.perf_counter() - start

    # 4. conversion and measurement
    start = stage("tf.lite conversion, sizes, interpreter accuracy")
    compressed_files = [(name, optimizations, convert(clustered, optimizations))
                        for name, optimizations in COMPRESSED_VARIANTS if name in wanted]
    variants = _measured_variants(dense_files + compressed_files, x_test, y_test, out_dir, model_name)
    timings["convert"] = time.perf_counter() - start

    return {
        "model": model_name,
        "settings": {"epochs": epochs, "prune_epochs": prune_epochs, "cluster_epochs": cluster_epochs,
                     "sparsity": sparsity, "clusters": clusters, "batch_size": batch_size,
                     "learning_rate": learning_rate, "seed": seed, "tensorflow": tf.__version__,
                     "tfmot": tfmot.__version__ if hasattr(tfmot, "__version__") else "unknown"},
        "keras_accuracy": {"dense": dense_accuracy, "pruned": pruned_accuracy,
                           "clustered": clustered_accuracy},
        "kernel_sparsity": _kernel_sparsity(clustered),
        "distinct_values": _distinct_values(clustered),
        "variants": variants,
        "best": _best_variant(variants),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }


def _stage(model_name: str, verbose: int, title: str) -> float:
    """Announces a stage of the baseline run (when verbose) and returns its start time."""
    if verbose:
        print(f"\n=== baseline {model_name}: {title} ===", flush=True)
    return time.perf_counter()


def _checked_settings(model_name: str, sparsity: float, epochs: Optional[int], prune_epochs: Optional[int],
                      cluster_epochs: Optional[int], variants: Optional[Sequence[str]]) -> tuple:
    """baseline_results' epochs (None -> the model's defaults) and the set of variants to measure; raises
    ValueError on a setting it cannot run."""
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}: choose one of {', '.join(MODEL_NAMES)}")
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be in (0, 1), got {sparsity}")
    defaults = DEFAULT_EPOCHS[model_name]
    epochs = defaults["dense"] if epochs is None else epochs
    prune_epochs = defaults["prune"] if prune_epochs is None else prune_epochs
    cluster_epochs = defaults["cluster"] if cluster_epochs is None else cluster_epochs
    known = [name for name, _ in DENSE_VARIANTS + COMPRESSED_VARIANTS]
    wanted = set(known if variants is None else variants) | {"dense_float"}
    if wanted - set(known):
        raise ValueError(f"unknown variants {sorted(wanted - set(known))}; known are {known}")
    if not any(name.startswith("pc_") for name in wanted):
        raise ValueError("variants must include at least one pruned+clustered (pc_*) variant")
    if min(epochs, prune_epochs, cluster_epochs) < 0 or prune_epochs < 1:
        raise ValueError("epochs must be >= 0 and prune_epochs >= 1 (pruning happens during fit)")
    return epochs, prune_epochs, cluster_epochs, wanted


def _train_dense(model_name: str, data, epochs: int, batch_size: int, learning_rate: float, verbose: int,
                 wanted: set) -> tuple:
    """(model, test accuracy, [(variant, optimizations, tflite)] of the wanted dense variants) after training."""
    (x_train, y_train), (x_test, y_test) = data
    model = build_model(model_name)
    _compile(model, learning_rate)
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=verbose)
    dense_accuracy = float(model.evaluate(x_test, y_test, verbose=0)[1])
    # tfmot's wrappers reuse the wrapped layer objects, so pruning overwrites this model's kernels:
    # convert the dense files now, before they are gone.
    dense_files = [(name, optimizations, convert(model, optimizations)) for name, optimizations in DENSE_VARIANTS
                   if name in wanted]
    return model, dense_accuracy, dense_files


def _tfmot_prune(model, x_train, y_train, sparsity: float, prune_epochs: int, batch_size: int,
                 learning_rate: float, verbose: int):
    """tfmot magnitude pruning to `sparsity`, ramped over the first 2/3 of the fine-tuning steps, stripped."""
    import tensorflow_model_optimization as tfmot

    steps_per_epoch = int(np.ceil(len(x_train) / batch_size))
    end_step = max(1, int(steps_per_epoch * prune_epochs * 2 / 3))
    schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity,
                                                    begin_step=0, end_step=end_step,
                                                    frequency=max(1, end_step // 20))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    _compile(pruned, learning_rate / 2)
    pruned.fit(x_train, y_train, batch_size=batch_size, epochs=prune_epochs, verbose=verbose,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    pruned = tfmot.sparsity.keras.strip_pruning(pruned)
    _compile(pruned, learning_rate)
    return pruned


def _tfmot_cluster(pruned, x_train, y_train, clusters: int, cluster_epochs: int, batch_size: int,
                   learning_rate: float, verbose: int):
    """tfmot sparsity-preserving clustering of `pruned`, centroids fine-tuned at a tenth of the rate, stripped."""
    import tensorflow_model_optimization as tfmot

    clustered = tfmot.clustering.keras.cluster_weights(
        pruned, number_of_clusters=clusters,
        cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS,
        preserve_sparsity=True)
    _compile(clustered, learning_rate / 10)
    if cluster_epochs:
        clustered.fit(x_train, y_train, batch_size=batch_size, epochs=cluster_epochs, verbose=verbose)
    clustered = tfmot.clustering.keras.strip_clustering(clustered)
    _compile(clustered, learning_rate)
    return clustered


def _measured_variants(files, x_test, y_test, out_dir: Optional[str], model_name: str) -> List[dict]:
    """Sizes, ratios to the first file (dense float) and interpreter accuracy of each (name, optimizations,
    tflite) of `files`; each file is written to `out_dir` when given."""
    variants: List[dict] = []
    for name, optimizations, tflite in files:
        entry = {"name": name, "optimizations": list(optimizations), **compressed_sizes(tflite),
                 "accuracy": None, "interpreter": None}
        entry["accuracy"], entry["interpreter"] = measured_accuracy(tflite, x_test, y_test)
        variants.append(entry)
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            _atomic_write(os.path.join(out_dir, f"{model_name}_{name}.tflite"), tflite)
    reference = variants[0]["raw"]  # dense_float is first
    for entry in variants:
        for key in ("raw", "gzip", "xz"):
            entry[f"ratio_{key}"] = reference / entry[key]
    return variants


def _best_variant(variants: List[dict]) -> dict:
    """The pruned+clustered variant and compressor with the largest ratio."""
    best_ratio, best_variant, best_compressor = max(
        (entry[f"ratio_{key}"], entry["name"], key) for entry in variants if entry["name"].startswith("pc_")
        for key in ("raw", "gzip", "xz"))
    best_entry = next(e for e in variants if e["name"] == best_variant)
    return {"variant": best_variant, "compressor": best_compressor, "ratio": best_ratio,
            "size": best_entry[best_compressor], "accuracy": best_entry["accuracy"]}


def _atomic_write(path: str, data: bytes) -> None:
    """dc_keras.atomic's crash-safe writer, imported only here: the files land after everything is measured,
    so the measurement itself still never loads dc_keras."""
    from dc_keras.atomic import atomic_write

    atomic_write(path, data)


def format_table(results: dict) -> str:
    """A plain-text table of one `baseline_results` answer (sizes in bytes, ratios vs dense float raw)."""
    acc = results["keras_accuracy"]
    s = results["settings"]
    lines = [
        f"Baseline {results['model']}: tf_keras dense -> tfmot prune {s['sparsity']:.0%} -> "
        f"sparsity-preserving clustering ({s['clusters']} clusters) -> tf.lite",
        f"Keras test accuracy: dense {acc['dense']:.4f}  pruned {acc['pruned']:.4f}  "
        f"clustered {acc['clustered']:.4f}",
        "kernel sparsity: " + "  ".join(f"{k} {v:.1%}" for k, v in results["kernel_sparsity"].items()),
        "",
        f"{'variant':<20}{'raw B':>10}{'gzip-9 B':>10}{'xz-9 B':>10}"
        f"{'x raw':>8}{'x gzip':>8}{'x xz':>8}{'acc':>9}",
    ]
    for e in results["variants"]:
        lines.append(f"{e['name']:<20}{e['raw']:>10}{e['gzip']:>10}{e['xz']:>10}"
                     f"{e['ratio_raw']:>8.1f}{e['ratio_gzip']:>8.1f}{e['ratio_xz']:>8.1f}{e['accuracy']:>9.4f}")
    for e in results["variants"]:
        if not e["interpreter"].startswith("default"):
            lines.append(f"  note {e['name']}: {e['interpreter']}")
    b = results["best"]
    lines.append(f"best: {b['variant']} under {b['compressor']}: {b['size']} B, {b['ratio']:.1f}x smaller than "
                 f"dense float .tflite, accuracy {b['accuracy']:.4f}")
    lines.append("ratios: dense_float raw size / size.  seconds: "
                 + ", ".join(f"{k} {v}" for k, v in results["seconds"].items()))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODEL_NAMES + ("all",), default="all")
    parser.add_argument("--epochs", type=int, help="dense training epochs (default per model)")
    parser.add_argument("--prune_epochs", type=int, help="pruning fine-tune epochs (default per model)")
    parser.add_argument("--cluster_epochs", type=int, help="clustering fine-tune epochs (default per model)")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", help=f"Fashion-MNIST IDX .gz directory (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--out_dir", help="also write every .tflite here")
    parser.add_argument("--json", help="write all results as JSON to this path")
    parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity: 0, 1 (bars) or 2")
    args = parser.parse_args(argv)

    names = MODEL_NAMES if args.model == "all" else (args.model,)
    data = load_fashion_mnist(args.data_dir)
    all_results = []
    for name in names:
        results = baseline_results(name, epochs=args.epochs, prune_epochs=args.prune_epochs,
                                   cluster_epochs=args.cluster_epochs, sparsity=args.sparsity,
                                   clusters=args.clusters, batch_size=args.batch_size, data=data,
                                   out_dir=args.out_dir, seed=args.seed, verbose=args.verbose)
        all_results.append(results)
        print("\n" + format_table(results), flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        _atomic_write(args.json, json.dumps({"results": all_results}, indent=2).encode())
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
