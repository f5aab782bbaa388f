"""export_tflite: a stripped pruned + clustered Keras model -> a .tflite whose weights stay compressed.

Steps: convert with TensorFlow's TFLiteConverter (float32, no converter optimisations, so the weights in the
file are exactly the clustered values); rewrite every op that has a rewriter (rewriters.REWRITERS) and whose
weights pay to compress into a dc custom op carrying a dc_codec blob; drop the float buffers and tensors
nothing uses any more; write to a temporary file beside the destination; optionally run that file through
the dc delegate and compare with Keras; only then rename it over the destination. The dc ops' biases are
stored as float16 by default (half their bytes; the delegate widens them to float32 once at load).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Set, Tuple

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from dc_keras import atomic, layer_registry
from dc_keras.export import channel_scale, flatbuffer, op_specs, slim
from dc_keras.export.errors import ExportError, ExportVerificationError, NoCompressibleLayerError
from dc_keras.export.report import METADATA_NAME, ExportReport, report_from_model
from dc_keras.export.rewrite_base import IndexBitsOption
from dc_keras.export.rewriters import BLOB_SUFFIX, REWRITERS, BitsOption, RewriteSettings, Skipped



def _keras_flavour(model) -> str:
    try:
        import keras
        if isinstance(model, keras.Model):
            return "keras"
    except ImportError:
        pass
    try:
        import tf_keras
        if isinstance(model, tf_keras.Model):
            return "tf_keras"
    except ImportError:
        pass
    raise ExportError(
        f"export_tflite takes a Keras 3 or tf_keras model, got {type(model).__module__}.{type(model).__name__}; "
        "load a saved model first (keras.models.load_model)")


def _all_layers(model) -> Iterable:
    return layer_registry.walk(model, containers=True, into_wrappers=True)


def _check_stripped(model) -> None:
    wrapped = [layer.name for layer in _all_layers(model) if layer_registry.wrapper_kind(layer) is not None]
    if wrapped:
        raise ExportError(
            f"layers {wrapped} are still wrapped for pruning/clustering: call strip_pruning() and "
            "strip_clustering() (dc_keras or tfmot) before export_tflite")


def _weights_key(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _layer_names(model, kernels: Dict[str, np.ndarray]) -> Dict[str, str]:
    """Digest of a layer's weights as TFLite stores them -> Keras layer name (`kernels`: tflite_layout_kernels,
    for Keras 3 models), so that ops are named after their Keras layers whatever the converter calls their
    tensors. tf_keras layers are matched as stored and transposed (FULLY_CONNECTED keeps [units, input])."""
    names = {_weights_key(kernel): name for name, kernel in kernels.items()}
    for layer in _all_layers(model):
        for attribute in ("kernel", "embeddings"):
            variable = getattr(layer, attribute, None)
            if variable is None or not hasattr(variable, "numpy"):
                continue
            value = np.asarray(variable.numpy(), dtype=np.float32)
            names.setdefault(_weights_key(value), layer.name)
            if value.ndim == 2:
                names.setdefault(_weights_key(value.T), layer.name)
    return names


def _convert(model, flavour: str, scratch_parent) -> bytes:
    """Float32 .tflite of `model`. from_keras_model works for tf_keras and (TF >= 2.16) for Keras 3; when it
    fails for Keras 3 the model goes through a SavedModel export (Keras 3's supported route).

    Both routes save a temporary SavedModel; it goes into a scratch directory under `scratch_parent` (the
    destination's directory), so that a killed run leaves nothing in the system temp directory.
    """
    import tensorflow as tf

    from dc_keras import _tf_notices

    with _tf_notices.filtered(conversion=True), atomic.scratch_tempdir(scratch_parent) as scratch:
        try:
            return tf.lite.TFLiteConverter.from_keras_model(model).convert()
        except Exception as first_error:  # noqa: BLE001 - any converter failure gets the fallback
            if flavour != "keras":
                raise ExportError(f"TFLite conversion failed: {first_error}") from first_error
            saved_model = os.path.join(scratch, "saved_model")
            try:
                model.export(saved_model, format="tf_saved_model", verbose=False)
                return tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()
            except Exception as error:  # noqa: BLE001
                raise ExportError(f"TFLite conversion failed: {first_error}; through SavedModel: {error}") from error


def _layer_name(names: Dict[str, str], weights: Optional[np.ndarray], tensor_name: str) -> str:
    if weights is not None:
        name = names.get(_weights_key(weights))
        if name:
            return name
    return tensor_name


def _blob_buffers(model) -> set:
    """Indices of the buffers holding compressed blobs (tensors named *BLOB_SUFFIX)."""
    return {int(tensor.buffer) for subgraph in model.subgraphs for tensor in subgraph.tensors or []
            if flatbuffer.text(tensor.name).endswith(BLOB_SUFFIX) and int(tensor.buffer) > 0}


BIAS_DTYPES = ("float16", "float32")
"""export_tflite's bias_dtype values: how the dc ops' constant biases are stored."""


def _dc_bias_inputs(model, subgraph) -> Dict[int, list]:
    """{tensor index: [ops]} of the tensors that are the bias input (slot 2) of a dc op that has one."""
    biases: Dict[int, list] = {}
    for op in subgraph.operators or []:
        spec = op_specs.BY_CUSTOM_CODE.get(flatbuffer.custom_code(model, op) or "")
        inputs = flatbuffer.op_inputs(op)
        if spec is not None and spec.has_bias and len(inputs) > 2 and inputs[2] >= 0:
            biases.setdefault(inputs[2], []).append(op)
    return biases


def _only_dc_biases(model, subgraph) -> Set[int]:
    """Indices of the tensors read only as a dc op's bias (no stock op reads them, no graph output)."""
    biases = _dc_bias_inputs(model, subgraph)
    bias_readers = {id(op) for readers in biases.values() for op in readers}
    other = set(int(i) for i in (subgraph.outputs if subgraph.outputs is not None else []))
    for op in subgraph.operators or []:
        inputs = flatbuffer.op_inputs(op)
        other.update(t for slot, t in enumerate(inputs) if t >= 0 and not (id(op) in bias_readers and slot == 2))
    return set(biases) - other


def _store_biases_as_float16(model) -> Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]]:
    """Stores the float32 constant bias of every dc op as FLOAT16 (a new buffer; the delegate widens it back
    to float32 at load). Skips a bias another op or a graph output also reads (it stays float32 for them)
    and one with a value beyond float16's range. Returns {(subgraph, tensor index): (float32 values, float16
    values)}; tensor indices are those of the converted model, whose tensors the rewrite only appended to."""
    halved = {}
    for s, subgraph in enumerate(model.subgraphs or []):
        new_buffers: Dict[int, int] = {}
        for index in sorted(_only_dc_biases(model, subgraph)):
            tensor = subgraph.tensors[index]
            values = flatbuffer.tensor_data(model, tensor) if tensor.type == schema.TensorType.FLOAT32 else None
            if values is None:
                continue
            with np.errstate(over="ignore"):
                half = values.astype(np.float16)
            if not np.array_equal(np.isfinite(half), np.isfinite(values)):
                continue  # |value| > 65504 would become inf
            old = int(tensor.buffer)
            if old not in new_buffers:  # tensors that shared a float32 buffer share the float16 one
                new_buffers[old] = flatbuffer.add_buffer(model, half.astype("<f2").tobytes())
            tensor.buffer = new_buffers[old]
            tensor.type = schema.TensorType.FLOAT16
            halved[(s, index)] = (values, half)
    return halved


def _byte_read_buffers(model) -> set:
    """Buffers only the dc delegate reads, byte-wise (copied at load): the blobs and the buffers of tensors
    that are nothing but dc op biases. They need 4-byte alignment (a flatbuffer vector's), not 16."""
    users: Dict[int, Set[Tuple[int, int]]] = {}
    for s, subgraph in enumerate(model.subgraphs or []):
        for index, tensor in enumerate(subgraph.tensors or []):
            users.setdefault(int(tensor.buffer), set()).add((s, index))
    only_bias = {(s, index) for s, subgraph in enumerate(model.subgraphs or [])
                 for index in _only_dc_biases(model, subgraph)}
    buffers = _blob_buffers(model)
    for s, index in only_bias:
        buffer = int(model.subgraphs[s].tensors[index].buffer)
        if buffer > 0 and users[buffer] <= only_bias:
            buffers.add(buffer)
    return buffers


def _add_metadata(model, payload: dict, compact: bool = False) -> None:
    from tensorflow.lite.python import schema_py_generated as schema

    metadata = schema.MetadataT()
    metadata.name = METADATA_NAME
    separators = (",", ":") if compact else None
    metadata.buffer = flatbuffer.add_buffer(model, json.dumps(payload, sort_keys=True,
                                                              separators=separators).encode())
    model.metadata = (model.metadata or []) + [metadata]


def export_tflite(model, path, *, bits: BitsOption = None, index_bits: IndexBitsOption = None, coder: str = "huffman",
                  layout: str = "sparse", min_rate: float = 2.0, verify: bool = False,
                  sample_inputs: Optional[np.ndarray] = None, tolerance: Optional[float] = None,
                  verify_batch_sizes: Sequence[int] = (1, 32), dense_path=None,
                  short_names: bool = True, slim_graph: bool = True, bias_dtype: str = "float16") -> ExportReport:
    """Writes `model` as a .tflite whose compressible layers are dc ops with compressed weights.

    Args:
      model: a stripped (strip_pruning + strip_clustering) Keras 3 model, or a tf_keras model stripped with
        tfmot. Layers whose weights have at most 2^bits distinct nonzero values become dc ops.
      path: output .tflite (written atomically: temporary file, verified if asked, then rename; a failed export
        leaves an existing file untouched). New files get the umask's permissions.
      bits: codebook index width: None (per layer, the fewest bits that hold its distinct values), an int, or
        {keras layer name: int}. A layer with more distinct values than an explicit 2^bits is an error.
      index_bits: relative index width (None: layer_registry's default, 5 for FC as in the paper), int, "auto"
        (per layer the width whose coded index stream is smallest, codec.smallest_index_bits) or a dict of
        layer name -> int or "auto".
      coder: "huffman" (the paper's), "rans", "raw" or "auto" (see dc_keras.codec.encode).
      layout: "sparse" (what the delegate's kernels compute on), "dense" or "auto".
      min_rate: compress a layer only if its blob is at least this many times smaller than its float weights.
      verify: run the written file through the dc delegate on `sample_inputs` (default: seeded random inputs
        of each batch size in verify_batch_sizes, in the input's own dtype: normal floats, integer ids
        within the smallest Embedding vocabulary) and compare with the Keras model.
      sample_inputs: verification inputs (cast to the model input's dtype).
      tolerance: largest allowed max|tflite - keras| / max|keras| when verifying. None (default): what
        float32 can promise for this network, measured: VERIFY_TOLERANCE_MARGIN times the stock float
        .tflite's own deviation from Keras on the same inputs, at least VERIFY_TOLERANCE_FLOOR, plus the
        measured effect of the float16 bias rounding (the stock file with the same rounded biases against it).
      dense_path: if given, also write the converter's dense float .tflite there (for comparisons).
      short_names: rename intermediate tensors to "t<index>" (graph inputs/outputs and blobs keep their
        names); the converter's fused-op names are a few percent of a small compressed file.
      slim_graph: apply dc_keras.export.slim's cuts (fold the dynamic Flatten reshape, share empty buffers,
        drop the converter's informational metadata, empty quantization tables, internal shape signatures,
        redundant has_rank and subgraph names, name inputs/outputs after their signature keys, 4-byte aligned
        blobs and dc op biases); the file stays loadable by stock LiteRT and computes the same outputs.
      bias_dtype: how the dc ops' constant biases are stored: "float16" (default: half the bytes; each value
        rounded to the nearest half, ~5e-4 relative, which verification allows for) or "float32" (exact).
        A bias that a stock op also reads, or with a value beyond float16's range (65504), stays float32.

    Returns:
      ExportReport: per-layer paper Table 2 columns measured from the blobs, file sizes, verification.

    Raises:
      ExportError: unsupported input, unstripped wrappers, conversion failure, too many distinct values.
      NoCompressibleLayerError: no layer was compressed.
      ExportVerificationError: verify=True and outputs differ beyond `tolerance`.
    """
    flavour = _keras_flavour(model)
    _check_stripped(model)
    if not getattr(model, "inputs", None):
        raise ExportError("the model has no defined inputs: build it (call it once, or give keras.Input) first")
    if bias_dtype not in BIAS_DTYPES:
        raise ExportError(f"bias_dtype must be one of {', '.join(BIAS_DTYPES)}, got {bias_dtype!r}")
    settings = RewriteSettings(bits=bits, index_bits=index_bits, coder=coder, layout=layout, min_rate=min_rate)

    destination = Path(path).absolute()
    dense_destination = Path(dense_path).absolute() if dense_path is not None else None
    for target in (destination, dense_destination):
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
    dense = _convert(model, flavour, destination.parent)
    tflite_model = flatbuffer.load(dense)
    kernels = channel_scale.tflite_layout_kernels(_all_layers(model)) if flavour == "keras" else {}
    # BatchNormalization folded into a shared layer's weights is taken back out before any rewriter runs.
    rescaled = channel_scale.separate_channel_scales(tflite_model, kernels)
    rewritten, skipped = _rewrite_ops(tflite_model, _layer_names(model, kernels), settings)
    if rewritten == 0:
        detail = "; ".join(f"{s['layer']}: {s['reason']}" for s in skipped) or "it has no Dense layer"
        raise NoCompressibleLayerError(
            f"no layer of {model.name!r} can be stored compressed ({detail}). Prune and cluster the model "
            "(dc_keras.prune_low_magnitude / cluster_weights, then strip_pruning / strip_clustering) first")

    payload = {"format": 1, "dense_tflite_bytes": len(dense), "stock": skipped, "channel_scaled": rescaled}
    data, halved = _file_bytes(tflite_model, payload, bias_dtype, slim_graph, short_names)
    verification = ((lambda temp_path: _verify(model, temp_path, sample_inputs, tolerance, verify_batch_sizes,
                                               dense=dense, rounded_biases=halved)) if verify else None)
    return _write_files(data, destination, dense, dense_destination, str(path), verification)


def _file_bytes(tflite_model, payload: dict, bias_dtype: str, slim_graph: bool, short_names: bool) -> tuple:
    """(bytes of the file, the biases stored as float16 (_store_biases_as_float16)) of the rewritten model:
    biases narrowed, unused tensors and buffers removed, slim's cuts, short names and the dc_keras metadata
    entry `payload` applied as export_tflite's options say."""
    halved = _store_biases_as_float16(tflite_model) if bias_dtype == "float16" else {}
    flatbuffer.remove_unused(tflite_model)
    if slim_graph:
        slim.slim(tflite_model)
    if short_names:
        flatbuffer.shorten_internal_names(tflite_model, keep_suffix=BLOB_SUFFIX)
    if slim_graph:  # readers default both lists to empty
        payload = {key: value for key, value in payload.items() if value != []}
    _add_metadata(tflite_model, payload, compact=slim_graph)
    data = flatbuffer.serialize(tflite_model, byte_buffers=_byte_read_buffers(tflite_model) if slim_graph else ())
    return data, halved


def _rewrite_ops(tflite_model, names: Dict[str, str], settings: RewriteSettings) -> tuple:
    """(number of ops rewritten, [{layer, op, reason} of the ops left stock]): every op with a rewriter,
    named after its Keras layer, rewritten in place or skipped with the rewriter's reason."""
    skipped = []
    rewritten = 0
    for subgraph in tflite_model.subgraphs:
        for op in list(subgraph.operators or []):
            entry = REWRITERS.get(flatbuffer.builtin_code(tflite_model, op))
            if entry is None:
                continue
            rewrite, weights_of = entry
            weights = weights_of(tflite_model, subgraph, op)
            if weights is None and not getattr(rewrite, "report_without_weights", True):
                continue  # e.g. a GATHER of shape values (Tensordot): not a layer, not worth listing
            out_name = subgraph.tensors[int(op.outputs[0])].name
            out_name = out_name.decode() if isinstance(out_name, bytes) else str(out_name)
            layer = _layer_name(names, weights, out_name)
            result = rewrite(tflite_model, subgraph, op, layer, settings)
            if isinstance(result, Skipped):
                skipped.append({"layer": result.layer, "op": result.op, "reason": result.reason,
                                "weights": int(weights.size) if weights is not None else None})
            else:
                rewritten += 1
    return rewritten, skipped


def _write_files(data: bytes, destination: Path, dense: bytes, dense_destination: Optional[Path], path: str,
                 verification) -> ExportReport:
    """Writes the compressed file (and the dense one when `dense_destination` is given) and returns the
    report; `verification(temp path)`, when given, checks the compressed file and gives report.verification.

    Both files are complete on disk (temporary names) and the compressed one verified from there before
    either replaces anything: a failed export leaves existing files as they were."""
    with atomic.AtomicFile(destination) as compressed_file, contextlib.ExitStack() as stack:
        compressed_file.write(data)
        dense_file = None
        if dense_destination is not None:
            dense_file = stack.enter_context(atomic.AtomicFile(dense_destination))
            dense_file.write(dense)
        report = report_from_model(flatbuffer.load(data), len(data), path)
        if verification is not None:
            report.verification = verification(compressed_file.temp_path)
        compressed_file.commit()
        if dense_file is not None:
            dense_file.commit()
    return report


VERIFY_TOLERANCE_FLOOR = 1e-5
"""Smallest automatic verification tolerance (relative to the output's largest magnitude)."""

VERIFY_TOLERANCE_MARGIN = 8.0
"""The automatic tolerance allows this many times the stock float .tflite's own deviation from Keras.

Why a multiple of a measured deviation: float32 summation order differs between Keras, TFLite's kernels and
ours, and the resulting error grows with depth and accumulation length; a deep network (MobileNetV2) already
shows ~1e-5 between stock TFLite and Keras, while a wrong codebook entry or a shifted index moves outputs by
orders of magnitude more.
"""


def _integer_input_range(model) -> int:
    """Exclusive upper bound for generated integer inputs: the smallest Embedding vocabulary in `model`
    (ids beyond it are invalid input, not a verification case), else 2."""
    sizes = [int(layer.input_dim) for layer in _all_layers(model) if hasattr(layer, "input_dim")]
    return max(1, min(sizes)) if sizes else 2


def _verification_batches(model, detail: dict, sample_inputs, batch_sizes: Sequence[int]) -> list:
    """Input batches in the input's own dtype: `sample_inputs` cast to it, else seeded random data (normal
    floats; integer ids within the model's smallest Embedding vocabulary; booleans)."""
    dtype = np.dtype(detail["dtype"])
    signature = [int(d) for d in detail["shape_signature"]]
    if sample_inputs is not None:
        return [np.asarray(sample_inputs).astype(dtype)]
    if any(d < 0 for d in signature[1:]):
        raise ExportError(f"input shape {signature} has unknown dimensions: pass sample_inputs")
    rng = np.random.default_rng(0)
    fixed_batch = signature[0] if signature and signature[0] > 0 else None
    sizes = [fixed_batch] if fixed_batch else list(batch_sizes)
    batches = []
    for size in sizes:
        shape = [size, *signature[1:]]
        if dtype == np.bool_:
            batches.append(rng.integers(0, 2, size=shape).astype(np.bool_))
        elif np.issubdtype(dtype, np.integer):
            batches.append(rng.integers(0, _integer_input_range(model), size=shape).astype(dtype))
        elif np.issubdtype(dtype, np.floating):
            batches.append(rng.standard_normal(shape).astype(dtype))
        else:
            raise ExportError(f"verify=True cannot generate {dtype} inputs: pass sample_inputs")
    return batches


def _run(interpreter, x: np.ndarray) -> np.ndarray:
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    interpreter.resize_tensor_input(inputs[0]["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inputs[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(outputs[0]["index"])


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))
                 / max(float(np.max(np.abs(want))), 1e-30))


def _with_rounded_biases(dense: bytes, rounded_biases: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]]) -> bytes:
    """The stock float .tflite `dense` with the biases the compressed file stores as float16 rounded the same
    way: the float network the compressed file computes, run by stock kernels.

    `rounded_biases` ({(subgraph, tensor index): (float32 values, float16 values)}, _store_biases_as_float16)
    indexes the converted model's tensors, which `dense` holds unchanged. A bias the channel-scale pass
    divided (b / s in the compressed file) gets the same relative rounding, value * half / float32."""
    model = flatbuffer.load(dense)
    for (s, index), (values, half) in rounded_biases.items():
        tensor = model.subgraphs[s].tensors[index] if index < len(model.subgraphs[s].tensors) else None
        original = None if tensor is None else flatbuffer.tensor_data(model, tensor)
        if original is None or original.shape != values.shape or original.dtype != np.float32:
            continue
        wide, exact = half.astype(np.float64), values.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(exact != 0, original.astype(np.float64) * wide / exact, original)
        rounded = np.where(exact == original, wide, scaled).astype("<f4")
        tensor.buffer = flatbuffer.add_buffer(model, rounded.tobytes())
    return flatbuffer.serialize(model)


def _verify(model, tflite, sample_inputs, tolerance: Optional[float], batch_sizes: Sequence[int],
            dense: Optional[bytes] = None,
            rounded_biases: Optional[Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]]] = None) -> dict:
    """Runs `tflite` (bytes, or the path of the file as written) through the dc delegate and compares it with
    Keras on the same inputs.

    With `tolerance` None the allowed relative error is VERIFY_TOLERANCE_MARGIN times the stock float
    `dense` .tflite's own deviation from Keras on those inputs, at least VERIFY_TOLERANCE_FLOOR, plus, when
    `rounded_biases` (biases stored as float16) is given, how far that stock file moves when its biases are
    rounded the same way (measured, no margin: the rounding is deterministic, the same in both files).
    """
    from dc_keras import delegate

    if isinstance(tflite, (bytes, bytearray)):
        interpreter = delegate.make_interpreter(model_content=bytes(tflite))
    else:
        interpreter = delegate.make_interpreter(model_path=tflite)
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError("verify=True supports models with one input and one output; verify others with "
                          "dc_keras.delegate.make_interpreter yourself")
    batches = _verification_batches(model, inputs[0], sample_inputs, batch_sizes)
    stock = rounded = None
    if tolerance is None and dense is not None:
        from ai_edge_litert.interpreter import Interpreter

        stock = Interpreter(model_content=dense)
        if rounded_biases:
            rounded = Interpreter(model_content=_with_rounded_biases(dense, rounded_biases))
    worst = 0.0
    stock_worst = 0.0
    rounding_worst = 0.0
    for x in batches:
        got = _run(interpreter, x)
        want = np.asarray(model(x, training=False), dtype=np.float32)
        if got.shape != want.shape:
            raise ExportVerificationError(f"output shape {got.shape} differs from Keras's {want.shape}")
        worst = max(worst, _relative_error(got, want))
        if stock is not None:
            stock_out = _run(stock, x)
            stock_worst = max(stock_worst, _relative_error(stock_out, want))
            if rounded is not None:
                # Normalised by Keras's output, as the other two errors, so that the three add up.
                difference = np.max(np.abs(_run(rounded, x).astype(np.float64) - stock_out.astype(np.float64)))
                rounding_worst = max(rounding_worst, float(difference) / max(float(np.max(np.abs(want))), 1e-30))
    allowed = tolerance if tolerance is not None else (max(VERIFY_TOLERANCE_FLOOR, VERIFY_TOLERANCE_MARGIN * stock_worst)
                                                       + rounding_worst)
    result = {"batch_sizes": [int(x.shape[0]) for x in batches], "max_rel_error": worst, "tolerance": allowed}
    if stock is not None:
        result["stock_tflite_rel_error"] = stock_worst
    if rounded is not None:
        result["bias_rounding_rel_error"] = rounding_worst
    if worst > allowed:
        basis = ("given" if tolerance is not None else
                 f"{VERIFY_TOLERANCE_MARGIN:g}x the stock float .tflite's {stock_worst:.2e}, at least "
                 f"{VERIFY_TOLERANCE_FLOOR:.0e}" + (f", plus {rounding_worst:.2e} from the float16 biases"
                                                    if rounded is not None else ""))
        raise ExportVerificationError(
            f"the exported model's outputs differ from Keras's: max relative error {worst:.3e} > "
            f"{allowed:.3e} ({basis})")
    return result
