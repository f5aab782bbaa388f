"""Reliability table: what dc_keras does with bad input, per attack class.

    python benchmarks/reliability.py                 # every case (a few minutes), Markdown table on stdout
    python benchmarks/reliability.py --quick         # a handful of cases (< 60 s), for the test suite
    python benchmarks/reliability.py --json out.json # also write every case's outcome and message

Attack classes (cases generated from seeded random weights, nothing stored):
  codec blobs    truncations, bit flips with and without the CRC recomputed, huge declared shapes, through
                 dc_keras.codec.decode (numpy reference) and the native decoder (decode, decode_sparse)
  tflite edits   every dc op kind (DcFullyConnected, DcConv2D, DcDepthwiseConv2D, DcGather) in exported
                 files, edited: bad options bytes, huge declared shapes, truncated blob buffers; loaded and
                 run through dc_keras.delegate.make_interpreter in sparse and dense mode
  tf ops         dc_keras.ops.decode / sparse_matmul / embedding_lookup on bad blobs and bad arguments
  cli            python -m dc_keras.cli.inspect / benchmark / compress on missing, garbage and bad input
  output safety  files that must survive: dc-compress into a directory holding an unrelated file,
                 export_tflite over an existing file when verification fails

Outcomes: "ok" (correct result, or bad input accepted as the valid file it happens to be), "clear error"
(an exception of the documented type / a non-zero exit with a message and no traceback), "raw error"
(another exception type, or a Python traceback from a CLI), "memory" (MemoryError under the child's
address-space cap), "crash" (killed by a signal: segfault, abort, uncaught C++ exception), "hang" (timeout),
"silent wrong" (success with a result that differs from the reference, or bad input accepted), "data lost"
(a file the user did not ask to replace was changed or removed).

Every case runs in a child process with RLIMIT_AS (4 GB) and a timeout. Python API cases share one child
per class (TensorFlow's import costs seconds): the child reports each case as it finishes, and when it dies
or stalls the case it was running is classified from that and a new child takes the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ["ok", "clear error", "raw error", "memory", "crash", "hang", "silent wrong", "data lost"]
CLASSES = ["codec blobs", "tflite edits", "tf ops", "cli", "output safety"]
MEMORY_LIMIT = 4 << 30
API_TIMEOUT = 60.0       # seconds per Python API case
CLI_TIMEOUT = 180.0      # seconds per CLI run (dc-compress trains a little)
PREPARE_TIMEOUT = 400.0  # a worker's set-up (exporting the test models)
MARK = "@@reliability "


# ------------------------------------------------------------------------------------------ the cases

def codec_cases(quick: bool) -> list:
    """(name, payload) of the codec blob class."""
    bases = [("huffman", "sparse"), ("rans", "sparse"), ("raw", "dense")] if not quick else [("huffman", "sparse")]
    cases = []
    for coder, layout in bases:
        base = {"coder": coder, "layout": layout}
        cases.append((f"{coder}/{layout}: valid blob", {**base, "mutation": "none"}))
        for fraction in ((0.5,) if quick else (0.0, 0.1, 0.5, 0.9, 0.99)):
            cases.append((f"{coder}/{layout}: truncated to {fraction:.0%}", {**base, "mutation": "truncate",
                                                                            "fraction": fraction}))
        for seed in range(2 if quick else 6):
            cases.append((f"{coder}/{layout}: bit flips, CRC recomputed (seed {seed})",
                          {**base, "mutation": "flip_crc", "seed": seed}))
        if not quick:
            cases.append((f"{coder}/{layout}: bit flip, CRC stale", {**base, "mutation": "flip", "seed": 0}))
            cases.append((f"{coder}/{layout}: declared shape 65535x65535", {**base, "mutation": "huge_shape"}))
            cases.append((f"{coder}/{layout}: declared shape 2^40", {**base, "mutation": "overflow_shape"}))
    return cases


DC_OPS = ["DcFullyConnected", "DcConv2D", "DcDepthwiseConv2D", "DcGather"]
TFLITE_EDITS = ["none", "options_magic", "options_version", "options_truncated", "options_activation",
                "options_huge_size", "options_negative_size", "blob_truncated_half", "blob_truncated_1",
                "blob_truncated_stale_shape", "blob_huge_shape", "blob_garbage"]


def tflite_cases(quick: bool) -> list:
    """(name, payload) of the tflite edit class: every dc op x edit x delegate mode."""
    cases = []
    for op in DC_OPS:
        edits = ["none", "options_magic", "blob_truncated_half"] if quick else TFLITE_EDITS
        for edit in edits:
            for mode in (("sparse",) if quick else ("sparse", "dense")):
                cases.append((f"{op}: {edit.replace('_', ' ')} ({mode})", {"op": op, "edit": edit, "mode": mode}))
    if not quick:
        cases.append(("DcFullyConnected: blob and options say 65535x65535 (dense)",
                      {"op": "DcFullyConnected", "edit": "huge_consistent", "mode": "dense"}))
        cases.append(("DcFullyConnected: blob and options say 65535x65535 (sparse)",
                      {"op": "DcFullyConnected", "edit": "huge_consistent", "mode": "sparse"}))
    return cases


TF_OP_CASES = [
    ("decode: valid blob", {"op": "decode", "blob": "valid"}),
    ("decode: truncated blob", {"op": "decode", "blob": "truncated"}),
    ("decode: garbage bytes", {"op": "decode", "blob": "garbage"}),
    ("decode: empty blob", {"op": "decode", "blob": "empty"}),
    ("decode: bit flips, CRC recomputed", {"op": "decode", "blob": "flip_crc"}),
    ("decode: declared shape 65535x65535", {"op": "decode", "blob": "huge_shape"}),
    ("sparse_matmul: valid blob", {"op": "sparse_matmul", "blob": "valid"}),
    ("sparse_matmul: truncated blob", {"op": "sparse_matmul", "blob": "truncated"}),
    ("sparse_matmul: x's inner dimension wrong", {"op": "sparse_matmul", "blob": "valid", "x": "wrong_inner"}),
    ("sparse_matmul: rank-3 blob", {"op": "sparse_matmul", "blob": "rank3"}),
    ("sparse_matmul: declared shape 65535x65535", {"op": "sparse_matmul", "blob": "huge_shape"}),
    ("sparse_matmul: bit flips, CRC recomputed", {"op": "sparse_matmul", "blob": "flip_crc"}),
    ("embedding_lookup: valid blob", {"op": "embedding_lookup", "blob": "valid"}),
    ("embedding_lookup: id out of range", {"op": "embedding_lookup", "blob": "valid", "ids": "out_of_range"}),
    ("embedding_lookup: negative id", {"op": "embedding_lookup", "blob": "valid", "ids": "negative"}),
    ("embedding_lookup: truncated blob", {"op": "embedding_lookup", "blob": "truncated"}),
    ("embedding_lookup: declared shape 65535x65535", {"op": "embedding_lookup", "blob": "huge_shape"}),
]

# (name, argv after the module, expectation): "error" = bad input that must be refused, "ok:<check>" = a
# valid run whose output must pass <check>. Paths are relative to the work directory.
_COMPRESS_QUICK = ["--epochs", "1", "--prune_epochs", "1", "--cluster_epochs", "1", "--prune_iterations", "1",
                   "--train_examples", "64", "--noplots", "--verbosity_level", "0", "--sparsity", "0.5",
                   "--model", "lenet300"]
CLI_CASES = [
    ("inspect: missing file", ["inspect", "missing.tflite"], "error"),
    ("inspect: a directory", ["inspect", "."], "error"),
    ("inspect: garbage file", ["inspect", "garbage.bin"], "error"),
    ("inspect: empty file", ["inspect", "empty.tflite"], "error"),
    ("inspect: truncated .tflite", ["inspect", "truncated.tflite"], "error"),
    ("inspect: .tflite with a corrupt blob", ["inspect", "corrupt_blob.tflite"], "error"),
    ("inspect: valid file", ["inspect", "models/fc.tflite"], "ok:inspect"),
    ("inspect: unknown flag", ["inspect", "--no_such_flag", "models/fc.tflite"], "error"),
    ("benchmark: missing file", ["benchmark", "missing.tflite"], "error"),
    ("benchmark: garbage file", ["benchmark", "garbage.bin"], "error"),
    ("benchmark: --num_runs=0", ["benchmark", "--num_runs=0", "models/fc.tflite"], "error"),
    ("benchmark: --batch=-3", ["benchmark", "--batch=-3", "models/fc.tflite"], "error"),
    ("benchmark: .tflite with a corrupt blob", ["benchmark", "--num_runs=2", "--warmup_runs=0",
                                               "corrupt_blob.tflite"], "error"),
    ("compress: --data missing", ["compress", *_COMPRESS_QUICK, "--data", "missing.npz", "--output_dir", "out_a"],
     "error"),
    ("compress: --data garbage", ["compress", *_COMPRESS_QUICK, "--data", "garbage.bin", "--output_dir", "out_b"],
     "error"),
    ("compress: --data without y_test", ["compress", *_COMPRESS_QUICK, "--data", "no_test.npz",
                                         "--output_dir", "out_c"], "error"),
    ("compress: NaN in x_train", ["compress", *_COMPRESS_QUICK, "--data", "nan.npz", "--output_dir", "out_d"],
     "error"),
    ("compress: labels out of range", ["compress", *_COMPRESS_QUICK, "--data", "bad_labels.npz",
                                       "--output_dir", "out_e"], "error"),
    ("compress: --model missing.keras", ["compress", *_COMPRESS_QUICK[:-2], "--model", "missing.keras",
                                         "--data", "good.npz", "--output_dir", "out_f"], "error"),
    ("compress: --sparsity 1.5", ["compress", *_COMPRESS_QUICK, "--sparsity", "1.5", "--data", "good.npz",
                                  "--output_dir", "out_g"], "error"),
    ("compress: --bits 0", ["compress", *_COMPRESS_QUICK, "--bits", "0", "--data", "good.npz",
                            "--output_dir", "out_h"], "error"),
]
CLI_QUICK = {"inspect: garbage file"}

# Output safety: (name, kind, payload). "cli" cases run dc-compress and then check the guarded file.
SAFETY_CASES = [
    ("dc-compress fails into a directory holding an unrelated file",
     {"kind": "compress", "data": "bad_labels.npz", "output_dir": "keep_a"}),
    ("dc-compress succeeds into a directory holding an unrelated file",
     {"kind": "compress", "data": "good.npz", "output_dir": "keep_b"}),
    ("dc-compress --output_dir is an existing regular file",
     {"kind": "compress_onto_file", "data": "good.npz", "output_dir": "keep_c.txt"}),
    ("export_tflite over an existing file, verification fails",
     {"kind": "export_failing_verification"}),
]
SAFETY_QUICK = {"export_tflite over an existing file, verification fails"}


# ------------------------------------------------------------------------------------ shared helpers

def _weights(rng, shape, density, k):
    """Pruned weights whose nonzeros take k distinct values."""
    import numpy as np

    centroids = np.unique(rng.normal(0, 1, size=4 * k).astype(np.float32))
    centroids = centroids[centroids != 0][:k]
    values = rng.choice(centroids, size=shape)
    return np.where(rng.random(shape) < density, values, np.float32(0)).astype(np.float32)


def _prune_and_share(array, density=0.5, k=8):
    """Keeps the largest |w| (fraction `density`) and snaps them to k shared values, as strip_* leave them."""
    import numpy as np

    flat = np.abs(array).ravel()
    if flat.size == 0:
        return array
    threshold = np.quantile(flat, 1 - density)
    kept = np.where(np.abs(array) >= threshold, array, 0).astype(np.float32)
    nonzero = kept[kept != 0]
    if nonzero.size == 0:
        return kept
    levels = np.linspace(nonzero.min(), nonzero.max(), k).astype(np.float32)
    levels[levels == 0] = levels.max() / 2 or 1.0
    snapped = levels[np.abs(kept[..., None] - levels).argmin(-1)]
    return np.where(kept != 0, snapped, 0).astype(np.float32)


def _with_shape(blob: bytes, dims) -> bytes:
    """`blob` with its header's shape replaced by `dims` and the CRC recomputed (streams unchanged)."""
    from dc_keras.codec import format as fmt

    body = _body(blob)
    ndim = body[1]
    pos = 2
    for _ in range(ndim):
        while body[pos] & 0x80:
            pos += 1
        pos += 1
    new = bytes([body[0], len(dims)]) + b"".join(fmt.write_varint(d) for d in dims) + body[pos:]
    return fmt.assemble(new)


def _body(blob: bytes) -> bytes:
    pos = 3
    while blob[pos] & 0x80:
        pos += 1
    return blob[pos + 1 + 4:]


def _flip_crc(blob: bytes, seed: int) -> bytes:
    """1-3 random bit flips in the body, CRC recomputed so that they reach the stream decoders."""
    import numpy as np
    from dc_keras.codec import format as fmt

    rng = np.random.default_rng(seed)
    body = bytearray(_body(blob))
    for position in rng.integers(0, len(body), size=int(rng.integers(1, 4))):
        body[int(position)] ^= 1 << int(rng.integers(0, 8))
    return fmt.assemble(bytes(body))


def _base_blob(coder="huffman", layout="sparse", shape=(30, 40), k=8, seed=0):
    import numpy as np
    from dc_keras import codec

    # The dense layout stores zero as a codebook value, so it gets one centroid fewer.
    weights = _weights(np.random.default_rng(seed), shape, 0.3, k - 1 if layout == "dense" else k)
    return weights, codec.encode(weights, bits=3, index_bits=4, coder=coder, layout=layout)


class Wrong(Exception):
    """A case's result differs from its reference (silent wrong) or a guarded file changed (data lost)."""

    def __init__(self, outcome: str, message: str):
        super().__init__(message)
        self.outcome = outcome


# ----------------------------------------------------------------------------- class: codec blobs

def run_codec_case(payload: dict, workdir: Path) -> str:
    """One mutated blob through the numpy reference and the native decoders; they must agree."""
    import numpy as np
    from dc_keras import codec
    from dc_keras.codec import native

    weights, blob = _base_blob(payload["coder"], payload["layout"])
    mutation = payload["mutation"]
    if mutation == "truncate":
        blob = blob[:int(len(blob) * payload["fraction"])]
    elif mutation == "flip_crc":
        blob = _flip_crc(blob, payload["seed"])
    elif mutation == "flip":
        corrupted = bytearray(blob)
        corrupted[len(blob) // 2] ^= 0x10
        blob = bytes(corrupted)
    elif mutation == "huge_shape":
        blob = _with_shape(blob, [65535, 65535])
    elif mutation == "overflow_shape":
        blob = _with_shape(blob, [1 << 20, 1 << 20])

    if mutation in ("huge_shape", "overflow_shape"):
        return _check_huge_blob(blob)
    results = {}
    for name, fn in [("python", codec.decode), ("native", native.decode),
                     ("native_sparse", lambda b: native.decode_sparse(b).to_dense())]:
        try:
            results[name] = np.asarray(fn(blob)).reshape(-1)
        except codec.CodecError as error:
            results[name] = error
    accepted = {name: not isinstance(value, Exception) for name, value in results.items()}
    if not any(accepted.values()):
        raise results["native"]
    if mutation == "none" and not np.array_equal(results["native"], weights.reshape(-1)):
        raise Wrong("silent wrong", "native decode of a valid blob differs from the encoded weights")
    if not all(accepted.values()):
        # the decoders disagree: whichever accepted produced values the other calls corrupt
        raise Wrong("silent wrong", f"decoders disagree on validity: {accepted}")
    reference = results["python"]
    for name in ("native", "native_sparse"):
        if results[name].tobytes() != reference.tobytes():
            raise Wrong("silent wrong", f"{name} differs from the numpy reference decoder")
    return "accepted by every decoder with identical values" if mutation != "none" else "decoded exactly"


def _check_huge_blob(blob: bytes) -> str:
    """A header declaring ~2^32 (valid) or 2^40 (invalid) elements: the header parsers must agree, and the
    native sparse decoder (whose size is rows + nonzeros, not the dense size) must either refuse it or
    return the same entries; dense decoding is left out, it legitimately needs 16 GB."""
    from dc_keras import codec
    from dc_keras.codec import native

    try:
        info = codec.parse_info(blob)
    except codec.CodecError:
        info = None
    try:
        native_info = native.parse_info(blob)
    except codec.CodecError as error:
        if info is not None:
            raise Wrong("silent wrong", f"native parser refuses a header the reference accepts: {error}") from None
        raise
    if info is None:
        raise Wrong("silent wrong", "native parser accepts a header the reference refuses")
    if native_info != info:
        raise Wrong("silent wrong", "the header parsers disagree")
    sparse = native.decode_sparse(blob)
    if sparse.row_ptr[-1] != len(sparse.delta) or sum(int(d != 0) for d in sparse.delta) != info.num_nonzeros:
        raise Wrong("silent wrong", "sparse form inconsistent with the header")
    return f"valid blob of {info.num_elements} elements decoded to its sparse form"


# ----------------------------------------------------------------------------- class: tflite edits

def prepare_models(workdir: Path) -> None:
    """Exports the two test models (conv + depthwise + dense; embedding) and their Keras reference outputs."""
    import numpy as np

    models = workdir / "models"
    if (models / "done").is_file():
        return
    models.mkdir(parents=True, exist_ok=True)
    import keras

    import dc_keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(5, name="fc")(x)
    conv_model = keras.Model(inp, out)
    ids = keras.Input((6,), dtype="int32")
    embed_model = keras.Model(ids, keras.layers.Embedding(40, 8, name="embed")(ids))
    for model in (conv_model, embed_model):
        for layer in model.layers:
            weights = layer.get_weights()
            if weights:
                weights[0] = _prune_and_share(weights[0])
                layer.set_weights(weights)
    dc_keras.export_tflite(conv_model, models / "conv.tflite", min_rate=0.0, dense_path=models / "conv_dense.tflite")
    dc_keras.export_tflite(embed_model, models / "embed.tflite", min_rate=0.0)
    x_conv = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
    x_ids = np.random.default_rng(2).integers(0, 40, size=(2, 6)).astype(np.int32)
    np.savez(models / "reference.npz", x_conv=x_conv, y_conv=np.asarray(conv_model(x_conv)), x_ids=x_ids,
             y_ids=np.asarray(embed_model(x_ids)))
    # A file with only a Dense layer for the CLI cases, with dense.tflite beside it (dc-benchmark's baseline).
    dinp = keras.Input((20,))
    dense_model = keras.Model(dinp, keras.layers.Dense(6, name="fc")(dinp))
    dense_model.layers[-1].set_weights([_prune_and_share(dense_model.layers[-1].get_weights()[0]),
                                        np.zeros(6, np.float32)])
    dc_keras.export_tflite(dense_model, models / "fc.tflite", min_rate=0.0, dense_path=models / "dense.tflite")
    (models / "done").write_text("ok")


def _edit_model(data: bytes, op_name: str, edit: str) -> bytes:
    import numpy as np
    from dc_keras.export import flatbuffer

    model = flatbuffer.load(data)
    subgraph = model.subgraphs[0]
    op = next(o for o in subgraph.operators if flatbuffer.custom_code(model, o) == op_name)
    options = bytearray(np.asarray(op.customOptions, dtype=np.uint8).tobytes())
    blob_tensor = subgraph.tensors[int(op.inputs[1])]
    blob = flatbuffer.buffer_bytes(model, blob_tensor.buffer)

    stale_shape = False

    def set_int(offset, value):
        options[offset:offset + 4] = int(value).to_bytes(4, "little", signed=True)

    if edit == "options_magic":
        options[0] ^= 0xFF
    elif edit == "options_version":
        options[4] = 99
    elif edit == "options_truncated":
        options = options[:8]
    elif edit == "options_activation":
        options[5] = 77
    elif edit == "options_huge_size":
        set_int(8, 0x7FFFFFFF)
        set_int(12, 0x7FFFFFFF)
    elif edit == "options_negative_size":
        set_int(8, -5)
    elif edit == "blob_truncated_half":
        blob = blob[:len(blob) // 2]
    elif edit == "blob_truncated_1":
        blob = blob[:-1]
    elif edit == "blob_truncated_stale_shape":
        blob = blob[:-1]
        stale_shape = True
    elif edit == "blob_huge_shape":
        from dc_keras.codec import parse_info

        dims = list(parse_info(blob).shape)
        rest = int(np.prod(dims[1:])) if len(dims) > 1 else 1
        blob = _with_shape(blob, [((1 << 32) - 1) // rest] + dims[1:])
    elif edit == "blob_garbage":
        blob = bytes(np.random.default_rng(0).integers(0, 256, len(blob), dtype=np.uint8))
    elif edit == "huge_consistent":
        blob = _with_shape(blob, [65535, 65535])
        set_int(8, 65535)
        set_int(12, 65535)
    op.customOptions = np.frombuffer(bytes(options), dtype=np.uint8).copy()
    model.buffers[blob_tensor.buffer].data = np.frombuffer(blob, dtype=np.uint8).copy()
    if not stale_shape:  # otherwise TFLite itself rejects the buffer as shorter than the tensor's shape
        blob_tensor.shape = np.asarray([len(blob)], dtype=np.int32)
    return flatbuffer.serialize(model)


def run_tflite_case(payload: dict, workdir: Path) -> str:
    """An exported model with one dc op edited, loaded and run through the delegate; an unedited model
    must match Keras, an edited one must be refused."""
    import numpy as np
    from dc_keras import delegate

    models = workdir / "models"
    reference = np.load(models / "reference.npz")
    gather = payload["op"] == "DcGather"
    data = (models / ("embed.tflite" if gather else "conv.tflite")).read_bytes()
    data = _edit_model(data, payload["op"], payload["edit"])
    x, want = (reference["x_ids"], reference["y_ids"]) if gather else (reference["x_conv"], reference["y_conv"])
    try:
        interpreter = delegate.make_interpreter(model_content=data, mode=payload["mode"])
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"])
    except (RuntimeError, ValueError) as error:
        raise ClearError(str(error)) from None
    error = float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))
    if payload["edit"] == "none":
        if not error <= 1e-4:
            raise Wrong("silent wrong", f"valid model: max relative error {error:.3g} against Keras")
        return f"valid model ran, max relative error {error:.2g}"
    raise Wrong("silent wrong", f"edited file ran without an error (max relative error {error:.3g})")


class ClearError(Exception):
    """The API refused the input with its documented exception type; carries the message."""


# ----------------------------------------------------------------------------------- class: tf ops

def run_tf_op_case(payload: dict, workdir: Path) -> str:
    """One dc_keras.ops call on a bad blob or argument (refused) or a valid one (checked against numpy)."""
    import numpy as np
    import tensorflow as tf

    from dc_keras import ops

    weights, blob = _base_blob("huffman", "sparse", shape=(12, 20), k=8, seed=4)
    kind = payload["blob"]
    if kind == "truncated":
        blob = blob[:len(blob) // 2]
    elif kind == "garbage":
        blob = bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8))
    elif kind == "empty":
        blob = b""
    elif kind == "flip_crc":
        blob = _flip_crc(blob, 3)
    elif kind == "huge_shape":
        blob = _with_shape(blob, [65535, 65535])
    elif kind == "rank3":
        blob = _with_shape(blob, [3, 4, 20])
    if kind == "flip_crc":
        # Flips can land in a codebook float and leave a valid blob; then the reference decoder's weights
        # are what the op must compute with.
        from dc_keras import codec

        try:
            weights = codec.decode(blob)
        except codec.CodecError:
            weights = None
    cols = 19 if payload.get("x") == "wrong_inner" else 20
    x = np.random.default_rng(1).normal(size=(3, cols)).astype(np.float32)
    ids = np.array([[0, 5, 11], [3, 3, 7]], np.int32)
    if payload.get("ids") == "out_of_range":
        ids[1, 2] = 12
    elif payload.get("ids") == "negative":
        ids[0, 0] = -1
    try:
        if payload["op"] == "decode":
            got = ops.decode(blob).numpy()
        elif payload["op"] == "sparse_matmul":
            got = ops.sparse_matmul(x, blob).numpy()
        else:
            got = ops.embedding_lookup(ids, blob).numpy()
    except tf.errors.OpError as error:
        text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", error.message.splitlines()[0])
        raise ClearError(f"{type(error).__name__}: {text}") from None
    if weights is None:
        raise Wrong("silent wrong", "the op accepted a blob the reference decoder rejects")
    if payload.get("x") or payload.get("ids"):
        raise Wrong("silent wrong", "bad argument accepted")
    if payload["op"] == "decode":
        want = weights
    elif payload["op"] == "sparse_matmul":
        want = (x.astype(np.float64) @ weights.reshape(weights.shape[0], -1).T.astype(np.float64)).astype(np.float32)
    elif kind == "huge_shape":
        # the same flat positions in a 65535-wide table: all of them fall in row 0
        table_row0 = np.zeros(65535, np.float32)
        table_row0[:weights.size] = weights.ravel()
        want = np.where((ids == 0)[..., None], table_row0, np.float32(0))
    else:
        want = weights[ids]
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-5):
        raise Wrong("silent wrong", f"result differs from the numpy reference (shape {got.shape} vs {want.shape})")
    if kind not in ("valid", "huge_shape", "flip_crc"):
        raise Wrong("silent wrong", "bad input accepted")
    return "matches the numpy reference"


# ----------------------------------------------------------------------------- class: output safety

def run_export_safety_case(payload: dict, workdir: Path) -> str:
    """export_tflite(verify=True) with a verification that must fail, over an existing file that must survive."""
    import keras
    import numpy as np

    import dc_keras
    from dc_keras.export.errors import ExportVerificationError

    path = workdir / "existing.tflite"
    old = b"an unrelated file the user keeps\n" * 10
    path.write_bytes(old)
    inp = keras.Input((16,))
    model = keras.Model(inp, keras.layers.Dense(4)(inp))
    model.layers[-1].set_weights([_prune_and_share(model.layers[-1].get_weights()[0]), np.zeros(4, np.float32)])
    try:
        dc_keras.export_tflite(model, path, min_rate=0.0, verify=True, tolerance=-1.0)
    except ExportVerificationError as error:
        if path.read_bytes() != old:
            raise Wrong("data lost", f"verification failed ({error}) but the existing file was replaced") from None
        raise ClearError(str(error)) from None
    raise Wrong("silent wrong", "verification with a negative tolerance passed")


def run_selftest_case(payload: dict, workdir: Path) -> str:
    """Misbehaves on purpose (tests of this script's classification): crash, hang, memory, raw error."""
    action = payload["action"]
    if action == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif action == "hang":
        time.sleep(3600)
    elif action == "memory":
        return str(len(bytearray(2 * MEMORY_LIMIT)))
    elif action == "raw":
        raise KeyError("no such key")
    elif action == "wrong":
        raise Wrong("silent wrong", "made up")
    return "fine"


API_RUNNERS = {"selftest": run_selftest_case, "codec blobs": run_codec_case, "tflite edits": run_tflite_case, "tf ops": run_tf_op_case,
               "output safety": run_export_safety_case}
CLEAR_TYPES_BY_CLASS = {"selftest": (), "codec blobs": ("CodecError",), "tflite edits": (), "tf ops": (), "output safety": ()}


def worker_main(workdir: Path, cases_file: Path, start: int) -> None:
    """Child process: runs the cases [name, payload, class] of `cases_file` from index `start`, one result
    line per case on stdout."""
    cases = json.loads(cases_file.read_text())
    classes = {cls for _, _, cls in cases[start:]}
    # Native libraries compile on first use (minutes on an empty build cache): build them here, under the
    # set-up timeout, so that no case's timeout includes a compile.
    if "codec blobs" in classes:
        from dc_keras.codec import native

        native._load()
    if "tf ops" in classes:
        from dc_keras import ops

        ops.load_library()
    if classes & {"tflite edits", "output safety"}:
        from dc_keras import delegate

        delegate.build()
    if "tflite edits" in classes:
        prepare_models(workdir)
    print(MARK + json.dumps({"ready": True}), flush=True)
    for index in range(start, len(cases)):
        print(MARK + json.dumps({"start": index}), flush=True)
        _, payload, cls = cases[index]
        runner = API_RUNNERS[cls]
        try:
            message = runner(payload, workdir)
            result = {"outcome": "ok", "message": message}
        except Wrong as wrong:
            result = {"outcome": wrong.outcome, "message": str(wrong)}
        except ClearError as error:
            result = {"outcome": "clear error", "message": str(error)}
        except MemoryError as error:
            result = {"outcome": "memory", "message": f"MemoryError: {error}"}
        except Exception as error:  # noqa: BLE001 - classifying every other failure is the point
            clear = type(error).__name__ in CLEAR_TYPES_BY_CLASS[cls]
            result = {"outcome": "clear error" if clear else "raw error",
                      "message": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
        result["index"] = index
        print(MARK + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------ parent side

def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    return env


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _stderr_tail(text: str) -> str:
    """The last meaningful stderr lines (TensorFlow's start-up log skipped): an absl flag error, else the
    last two lines (the delegate's message comes one line before TFLite's "failed to prepare")."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    noise = ("I0000", "W0000", "WARNING: All log", "To enable the following", "E0000", "INFO: Created TensorFlow")
    lines = [line for line in lines if not line.startswith(noise) and set(line) - set("^~ ")]
    flag_errors = [line for line in lines if "Flags parsing error" in line]
    if flag_errors:
        return flag_errors[-1][:300]
    return " / ".join(lines[-2:])[:300]


def run_api_cases(cases: list, workdir: Path, timeout: float = API_TIMEOUT) -> list:
    """Runs Python API cases ([name, payload, class]) in workers, `timeout` seconds each; a dead or stalled
    worker is replaced and the case it was running classified (crash / hang)."""
    cases_file = workdir / f"cases-{len(list(workdir.glob('cases-*.json')))}.json"
    cases_file.write_text(json.dumps(cases))
    results = [None] * len(cases)
    start = 0
    while start < len(cases):
        stderr_path = workdir / f"worker-{cases_file.stem}-{start}.err"
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                     "--workdir", str(workdir), "--cases", str(cases_file), "--start", str(start)],
                                    stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=workdir, env=_env(),
                                    preexec_fn=_limit_memory)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)],
                         daemon=True).start()
        current, deadline = None, time.monotonic() + PREPARE_TIMEOUT
        finished = False
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                proc.kill()
                proc.wait()
                if current is None:
                    raise RuntimeError(f"worker set-up timed out; see {stderr_path}")
                results[current] = {"outcome": "hang", "message": f"no result within {timeout:.0f} s"}
                start = current + 1
                break
            if line is None:
                code = proc.wait()
                if current is None and code == 0 and all(r is not None for r in results[start:]):
                    finished = True
                    break
                if current is None:
                    raise RuntimeError(f"worker exited ({code}) before its first case: "
                                       f"{_stderr_tail(stderr_path.read_text())}")
                tail = _stderr_tail(stderr_path.read_text())
                outcome = "crash" if code < 0 else "raw error"
                what = _signal_name(code) if code < 0 else f"exit {code}"
                results[current] = {"outcome": outcome, "message": f"{what}: {tail}" if tail else what}
                start = current + 1
                break
            if not line.startswith(MARK):
                continue
            message = json.loads(line[len(MARK):])
            if "start" in message:
                current = message["start"]
                deadline = time.monotonic() + timeout
            elif "index" in message:
                results[message["index"]] = {"outcome": message["outcome"], "message": message["message"]}
                current = None
                deadline = time.monotonic() + timeout
        if finished:
            start = len(cases)
    return [{"class": case_class, "case": name, **result} for (name, _, case_class), result in zip(cases, results)]


def _run_cli(argv: list, workdir: Path, timeout: float = CLI_TIMEOUT):
    module = {"inspect": "dc_keras.cli.inspect", "benchmark": "dc_keras.cli.benchmark",
              "compress": "dc_keras.cli.compress"}[argv[0]]
    try:
        proc = subprocess.run([sys.executable, "-m", module, *argv[1:]], capture_output=True, text=True,
                              timeout=timeout, cwd=workdir, env=_env(), preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        return None
    return proc


def _classify_cli(proc, expectation: str, check=None) -> dict:
    if proc is None:
        return {"outcome": "hang", "message": f"no exit within {CLI_TIMEOUT:.0f} s"}
    tail = _stderr_tail(proc.stderr) or _stderr_tail(proc.stdout)
    if proc.returncode < 0:
        return {"outcome": "crash", "message": f"{_signal_name(proc.returncode)}: {tail}"}
    if "Traceback (most recent call last)" in proc.stderr:
        outcome = "memory" if "MemoryError" in tail else "raw error"
        return {"outcome": outcome, "message": f"traceback: {tail}"}
    if proc.returncode != 0:
        if expectation == "error":
            return {"outcome": "clear error", "message": tail}
        return {"outcome": "clear error", "message": f"valid input refused: {tail}"}
    if expectation == "error":
        return {"outcome": "silent wrong", "message": "bad input accepted (exit 0)"}
    problem = check(proc) if check else None
    if problem:
        return {"outcome": "silent wrong", "message": problem}
    return {"outcome": "ok", "message": "exit 0, output checked"}


def prepare_cli_files(workdir: Path) -> None:
    """Inputs of the CLI and output-safety cases (the exported models come from the tflite worker)."""
    import numpy as np

    rng = np.random.default_rng(0)
    (workdir / "garbage.bin").write_bytes(bytes(rng.integers(0, 256, 4096, dtype=np.uint8)))
    (workdir / "empty.tflite").write_bytes(b"")
    exported = workdir / "models" / "fc.tflite"
    if exported.is_file():
        data = exported.read_bytes()
        (workdir / "truncated.tflite").write_bytes(data[:len(data) // 2])
        corrupt = bytearray(data)
        corrupt[data.find(b"DC\x01") + 20] ^= 0x40  # inside the blob's body: the CRC no longer matches
        (workdir / "corrupt_blob.tflite").write_bytes(bytes(corrupt))
    x = rng.random((80, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 80)
    np.savez(workdir / "good.npz", x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
    np.savez(workdir / "no_test.npz", x_train=x[:64], y_train=y[:64])
    nan = x.copy()
    nan[3, 5, 5] = np.nan
    np.savez(workdir / "nan.npz", x_train=nan[:64], y_train=y[:64], x_test=nan[64:], y_test=y[64:])
    bad = y.copy()
    bad[7] = 12
    bad[70] = -1
    np.savez(workdir / "bad_labels.npz", x_train=x[:64], y_train=bad[:64], x_test=x[64:], y_test=bad[64:])


def _check_inspect(proc) -> str | None:
    row = [line for line in proc.stdout.splitlines() if line.split()[:2] == ["fc", "DcFullyConnected"]]
    return None if row and " 120 " in row[0] else "inspect did not list the fc layer with its 120 weights"


def run_cli_class(quick: bool, workdir: Path) -> list:
    """Runs the CLI cases, each as its own process."""
    results = []
    for name, argv, expectation in CLI_CASES:
        if quick and name not in CLI_QUICK:
            continue
        began = time.monotonic()
        proc = _run_cli(argv, workdir)
        check = _check_inspect if expectation == "ok:inspect" else None
        results.append({"class": "cli", "case": name, **_classify_cli(proc, expectation, check),
                        "seconds": round(time.monotonic() - began, 1)})
    return results


def run_safety_cli_cases(quick: bool, workdir: Path) -> list:
    """dc-compress runs next to (or onto) a file the user keeps; the file must come out byte-identical."""
    results = []
    for name, payload in SAFETY_CASES:
        if quick and name not in SAFETY_QUICK:
            continue
        if payload["kind"] == "export_failing_verification":
            continue  # a Python API case: run by run_all with the others
        target = workdir / payload["output_dir"]
        keep_text = b"notes the user keeps beside the results\n"
        if payload["kind"] == "compress_onto_file":
            target.write_bytes(keep_text)
            guarded = target
        else:
            target.mkdir(exist_ok=True)
            guarded = target / "notes.txt"
            guarded.write_bytes(keep_text)
        proc = _run_cli(["compress", *_COMPRESS_QUICK, "--data", payload["data"], "--output_dir", str(target)],
                        workdir)
        result = _classify_cli(proc, "ok" if payload["data"] == "good.npz" else "error")
        if not guarded.is_file() or guarded.read_bytes() != keep_text:
            result = {"outcome": "data lost", "message": f"{guarded.name} was removed or changed "
                                                         f"(run: {result['outcome']}: {result['message']})"}
        results.append({"class": "output safety", "case": name, **result})
    return results


def ensure_models(workdir: Path) -> None:
    """Exports the test models in a child (the parent stays free of TensorFlow) unless already there."""
    if (workdir / "models" / "done").is_file():
        return
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--prepare-models", "--workdir",
                           str(workdir)], capture_output=True, text=True, timeout=PREPARE_TIMEOUT, env=_env())
    if proc.returncode != 0:
        raise RuntimeError(f"exporting the test models failed: {proc.stderr[-2000:]}")


QUICK_CLASSES = ["codec blobs", "tf ops", "cli", "output safety"]


def run_all(quick: bool, workdir: Path, classes=None) -> list:
    """Runs every case (or the quick subset) of `classes` (default: all, or QUICK_CLASSES with `quick`: the
    others need exported models, which take longer than the quick budget); returns one dict per case."""
    classes = classes or (QUICK_CLASSES if quick else CLASSES)
    api_cases = []
    if "codec blobs" in classes:
        api_cases += [(name, payload, "codec blobs") for name, payload in codec_cases(quick)]
    if "tflite edits" in classes:
        api_cases += [(name, payload, "tflite edits") for name, payload in tflite_cases(quick)]
    if "tf ops" in classes:
        chosen = TF_OP_CASES if not quick else [c for c in TF_OP_CASES if c[0].startswith("decode")][:3]
        api_cases += [(name, payload, "tf ops") for name, payload in chosen]
    if "output safety" in classes:
        api_cases += [(name, payload, "output safety") for name, payload in SAFETY_CASES
                      if payload["kind"] == "export_failing_verification" and (not quick or name in SAFETY_QUICK)]
    results = run_api_cases(api_cases, workdir) if api_cases else []
    if "cli" in classes or "output safety" in classes:
        if not quick:
            ensure_models(workdir)
        prepare_cli_files(workdir)
    if "cli" in classes:
        results += run_cli_class(quick, workdir)
    if "output safety" in classes:
        results += run_safety_cli_cases(quick, workdir)
    return results


def markdown_table(results: list) -> str:
    """Attack class x outcome counts as a Markdown table."""
    classes = [c for c in CLASSES if any(r["class"] == c for r in results)]
    lines = ["| attack class | cases | " + " | ".join(OUTCOMES) + " |",
             "|---|---:|" + "---:|" * len(OUTCOMES)]
    for cls in classes:
        rows = [r for r in results if r["class"] == cls]
        counts = [sum(r["outcome"] == outcome for r in rows) for outcome in OUTCOMES]
        lines.append(f"| {cls} | {len(rows)} | " + " | ".join(str(c) if c else "·" for c in counts) + " |")
    return "\n".join(lines)


def problem_list(results: list) -> str:
    """One line per case whose outcome is not ok / clear error."""
    bad = [r for r in results if r["outcome"] not in ("ok", "clear error")]
    return "\n".join(f"- {r['class']} / {r['case']}: **{r['outcome']}**: {r['message'][:240]}" for r in bad)


def main(argv=None) -> int:
    """Command line: runs the cases, prints the table (and problem list), writes --json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a handful of cases per class (< 60 s)")
    parser.add_argument("--json", type=Path, help="also write every case's outcome and message here")
    parser.add_argument("--classes", help="comma-separated subset of: " + ", ".join(CLASSES))
    parser.add_argument("--workdir", type=Path, help="keep inputs and worker logs here (default: a temp dir)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cases", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--prepare-models", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prepare_models:
        prepare_models(args.workdir)
        return 0
    if args.worker:
        worker_main(args.workdir, args.cases, args.start)
        return 0
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    for cls in classes or []:
        if cls not in CLASSES:
            parser.error(f"unknown class {cls!r}; choose from {', '.join(CLASSES)}")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dc-reliability-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = run_all(args.quick, workdir.resolve(), classes)
    elapsed = time.monotonic() - began
    print(markdown_table(results))
    problems = problem_list(results)
    if problems:
        print("\nCases that are not ok / clear error:\n" + problems)
    print(f"\n{len(results)} cases in {elapsed:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"quick": args.quick, "seconds": round(elapsed, 1), "results": results},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
