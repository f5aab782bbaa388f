"""Tiny hostile inputs for the resource-limit tests: codec blobs that declare huge tensors in a few bytes, and
single-op .tflite files around them; `blob_span` finds a layer's blob in an exported file for tests that
corrupt it in place.

Also a command-line probe (`python tests/crafted_models.py NAME`) that runs one input in a fresh process and
prints its wall time, peak RSS growth and outcome as JSON: the tests run it in a subprocess so that a
regression that does allocate gigabytes cannot take the test process with it, and the same command gives
the before/after figures of the docs.
"""
from __future__ import annotations

import json
import resource
import struct
import sys
import time
from typing import Dict, List, Sequence

import numpy as np

from dc_keras.codec import format as fmt

# flags bits: 0 dense layout, 2-3 code-stream coder, 4-5 delta-stream coder (FORMAT.md); 0 = raw everywhere.
RAW_SPARSE = 0x00
RAW_DENSE = 0x01


def blob_span(data: bytes, layer: str):
    """(offset, length) of `layer`'s compressed blob ("<layer>/dc_blob") in the .tflite bytes `data`; the blob's
    bytes must occur exactly once in the file, so that changing them changes only that blob."""
    from dc_keras.export import flatbuffer

    model = flatbuffer.load(data)
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            if flatbuffer._text(tensor.name) == f"{layer}/dc_blob":
                blob = flatbuffer.buffer_bytes(model, tensor.buffer)
                start = data.find(blob)
                assert start > 0 and data.find(blob, start + 1) < 0
                return start, len(blob)
    raise AssertionError(f"no blob for {layer}")


def empty_blob(shape: Sequence[int], bits: int = 5, index_bits: int = 5) -> bytes:
    """A valid sparse-layout blob of `shape` with no nonzero and no codebook: ~20 bytes for any shape."""
    body = bytes([RAW_SPARSE, len(shape)]) + b"".join(fmt.write_varint(int(d)) for d in shape)
    body += bytes([(index_bits << 4) | bits]) + fmt.write_varint(0) + fmt.write_varint(0) + fmt.write_varint(0)
    return fmt.assemble(body)


def dense_raw_blob(codes: Sequence[int], centroids: Sequence[float], shape: Sequence[int], bits: int = 2,
                   nonzeros: int | None = None) -> bytes:
    """A dense-layout, raw-coded blob: one `bits`-wide code per position into the float32 `centroids`."""
    cb = np.asarray(centroids, np.float32)
    if nonzeros is None:
        nonzeros = int(sum(cb.view(np.uint32)[c] & 0x7FFFFFFF != 0 for c in codes))
    body = bytes([RAW_DENSE, len(shape)]) + b"".join(fmt.write_varint(int(d)) for d in shape)
    body += bytes([bits]) + fmt.write_varint(len(cb)) + fmt.write_varint(nonzeros) + cb.tobytes()
    writer = fmt.BitWriter()
    for c in codes:
        writer.write(int(c), bits)
    return fmt.assemble(body + writer.getvalue())


def _options(magic: bytes, fields: Sequence[int], head: Sequence[int] = (1, 0, 0, 0)) -> bytes:
    return magic + bytes(head) + struct.pack(f"<{len(fields)}i", *fields)


def conv_options(out_c: int, kh: int, kw: int, in_c: int, padding: int = 1) -> bytes:
    """DcConv2D custom options (layout in tflite_delegate/src/tflite_kernels/options_layout.h), stride and dilation 1."""
    return _options(b"DCCV", [out_c, kh, kw, in_c, 1, 1, 1, 1], head=(1, 0, padding, 0))


def fc_options(units: int, inputs: int) -> bytes:
    return _options(b"DCFC", [units, inputs])


def gather_options(vocab: int, dim: int) -> bytes:
    return _options(b"DCGA", [vocab, dim])


def single_op_model(custom_code: str, options: bytes, input_shape: List[int], input_type: int,
                    blob: bytes, output_shape: List[int]) -> bytes:
    """A .tflite of one custom op: input 0 the runtime input, input 1 the constant blob, one float32 output."""
    from tensorflow.lite.python import schema_py_generated as schema

    from dc_keras.export import flatbuffer

    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    model.operatorCodes = []
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators = [], []
    model.subgraphs = [subgraph]

    def tensor(name: str, shape: List[int], tensor_type: int) -> int:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, np.asarray(shape, np.int32), tensor_type, 0
        subgraph.tensors.append(t)
        return len(subgraph.tensors) - 1

    x = tensor("x", input_shape, input_type)
    w = flatbuffer.add_tensor(model, subgraph, "layer/dc_blob", [len(blob)], schema.TensorType.UINT8, blob)
    y = tensor("y", output_shape, schema.TensorType.FLOAT32)
    op = schema.OperatorT()
    op.opcodeIndex = flatbuffer.custom_opcode_index(model, custom_code)
    op.inputs, op.outputs = np.asarray([x, w], np.int32), np.asarray([y], np.int32)
    op.customOptions = np.frombuffer(options, np.uint8).copy()
    op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
    subgraph.operators.append(op)
    subgraph.inputs, subgraph.outputs = np.asarray([x], np.int32), np.asarray([y], np.int32)
    return flatbuffer.serialize(model)


def _float32() -> int:
    from tensorflow.lite.python import schema_py_generated as schema

    return schema.TensorType.FLOAT32


def conv_bomb(kernel: int, in_c: int = 3, out_c: int = 1, out_w: int = 128) -> bytes:
    """DcConv2D with an empty kernel x kernel filter over an input giving a 1 x out_w output (VALID): 128
    output pixels fill the 8 im2col panels the kernel keeps for threads."""
    in_shape = [1, kernel, kernel + out_w - 1, in_c]
    return single_op_model("DcConv2D", conv_options(out_c, kernel, kernel, in_c), in_shape, _float32(),
                           empty_blob([out_c, kernel, kernel, in_c]), [1, 1, out_w, out_c])


def fc_bomb(units: int, inputs: int) -> bytes:
    return single_op_model("DcFullyConnected", fc_options(units, inputs), [1, inputs], _float32(),
                           empty_blob([units, inputs]), [1, units])


def gather_bomb(vocab: int, dim: int, count: int = 1) -> bytes:
    """DcGather of `count` int32 indices from an empty [vocab, dim] table."""
    from tensorflow.lite.python import schema_py_generated as schema

    return single_op_model("DcGather", gather_options(vocab, dim), [count], schema.TensorType.INT32,
                           empty_blob([vocab, dim]), [count, dim])


# name -> (what, .tflite bytes builder, delegate options); see main().
TFLITE_BOMBS = {
    "conv1024": (lambda: conv_bomb(1024), {}),
    "conv4096": (lambda: conv_bomb(4096), {}),
    "fc65535_dense": (lambda: fc_bomb(65535, 65535), {"mode": "dense"}),
    "gather_2g": (lambda: gather_bomb(1, 2**31 - 1), {}),
    "gather_16_rows_1g": (lambda: gather_bomb(1, 2**28, count=16), {}),
}


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _limit_address_space(extra_gib: float) -> None:
    """Caps this process's address space at its current size plus `extra_gib`, so that a large allocation
    fails (std::bad_alloc in C++) instead of succeeding on a big machine."""
    with open("/proc/self/status") as status:
        vm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    limit = vm_kib * 1024 + int(extra_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_probe(name: str, options: Dict[str, str] | None = None, address_space_gib: float | None = None
              ) -> Dict[str, object]:
    """Runs input `name` once in this process; returns {seconds, rss_growth_bytes, ok, error}.

    `options` are extra delegate options (.tflite inputs) or ops.decode keyword arguments (decode_8g);
    `address_space_gib` caps the address space that far above its size once everything is loaded."""
    result: Dict[str, object] = {"name": name}
    options = dict(options or {})
    if name in TFLITE_BOMBS:
        from ai_edge_litert.interpreter import Interpreter

        from dc_keras import delegate

        build, bomb_options = TFLITE_BOMBS[name]
        data = build()
        result["file_bytes"] = len(data)
        options = {**bomb_options, **options}
        mode = options.pop("mode", "sparse")
        dc = delegate.load(mode=mode, options=options)
        if address_space_gib is not None:
            _limit_address_space(address_space_gib)
        baseline = _peak_rss_bytes()
        start = time.perf_counter()
        try:
            interpreter = Interpreter(model_content=data, experimental_delegates=[dc])
            interpreter.allocate_tensors()
            interpreter.invoke()
            result["ok"] = True
        except Exception as error:  # the probe reports whatever happens
            result["ok"], result["error"] = False, f"{type(error).__name__}: {error}"
    elif name == "decode_8g":
        import tensorflow as tf

        from dc_keras import ops

        blob = empty_blob([2**31 - 1, 1])
        result["file_bytes"] = len(blob)
        ops.decode(empty_blob([2, 2]))  # loads TensorFlow's runtime before the baseline
        baseline = _peak_rss_bytes()
        start = time.perf_counter()
        try:
            out = ops.decode(blob, **{k: int(v) for k, v in options.items()})
            result["ok"], result["shape"] = True, list(out.shape)
        except (tf.errors.OpError, ValueError) as error:
            result["ok"], result["error"] = False, f"{type(error).__name__}: {error.message if hasattr(error, 'message') else error}"
    else:
        raise SystemExit(f"unknown probe {name!r}")
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["rss_growth_bytes"] = _peak_rss_bytes() - baseline
    return result


if __name__ == "__main__":
    # crafted_models.py NAME [key=value ...] [--address-space-gib N]
    args = sys.argv[2:]
    space = None
    if "--address-space-gib" in args:
        at = args.index("--address-space-gib")
        space = float(args[at + 1])
        del args[at:at + 2]
    extra = dict(arg.split("=", 1) for arg in args)
    print(json.dumps(run_probe(sys.argv[1], extra, space)))
