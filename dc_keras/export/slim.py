"""Cuts to the bytes of a compressed .tflite that are not weights: graph, names, metadata and padding.

On a model the size of LeNet-300-100 the weights are ~18 KB and everything else was ~4.3 KB (biases 1.6 KB,
the rest graph and headers), so these bytes decide a good part of the file's ratio. Each cut keeps the file
a valid TFLite model that stock ai-edge-litert loads (the stock ops it leaves still run without our
delegate) and gives bit-identical outputs:

- `fold_static_reshapes`: the converter turns a Keras Flatten with a dynamic batch into SHAPE ->
  STRIDED_SLICE -> PACK -> RESHAPE (four ops, six tensors, five buffers); when every dimension but the
  batch is known, one RESHAPE to a constant [-1, ...] shape computes the same.
- `share_empty_buffers`: the converter gives every activation tensor its own empty buffer; they all point
  to the schema's empty buffer 0 instead.
- `drop_informational_metadata`: the converter's "min_runtime_version" and "CONVERSION_METADATA" entries
  and model description, which no interpreter reads.
- `name_io_after_signature`: graph inputs and outputs are named after their signature keys ("image"
  instead of "serving_default_image:0"); the signature runner looks tensors up by the keys, unchanged.
- `drop_empty_quantization`: the converter gives every float tensor a quantization table with nothing in
  it; an absent table means the same (not quantized).
- `drop_internal_shape_signatures`: the shape signature (the shape with -1 for a dynamic batch) of tensors
  that are neither graph inputs nor outputs; the interpreter resizes from the inputs' signatures and
  propagates shapes through the ops, and reports the inputs' and outputs' signatures, which stay.
- `drop_redundant_has_rank`: has_rank on a tensor whose shape is given (it only tells an unranked tensor
  from a scalar, whose shape is empty).
- `drop_subgraph_names`: the subgraph's name ("main"); signatures find it by index.
- blob and dc-op bias buffers are 4-byte aligned instead of 16 (flatbuffer.serialize: the delegate copies
  them byte-wise, only float constants that stock kernels read in place need the converter's 16-byte
  alignment).

`file_breakdown` measures where a file's bytes go (weights, biases, other constants, graph and metadata).
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Set

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from dc_keras.export import flatbuffer

INFORMATIONAL_METADATA = ("min_runtime_version", "CONVERSION_METADATA")
"""Converter metadata entries that no interpreter needs to run the model."""


def _text(value) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else (value or "")


def _ints(values) -> List[int]:
    return [] if values is None else [int(v) for v in np.asarray(values).reshape(-1)]


def _producers(subgraph) -> Dict[int, "schema.OperatorT"]:
    return {tensor: op for op in subgraph.operators or [] for tensor in _ints(op.outputs)}


def _constant(model, subgraph, index: int):
    if index < 0:
        return None
    return flatbuffer.tensor_data(model, subgraph.tensors[index])


def _batch_slice_of_shape(model, subgraph, producers, tensor: int, source: int) -> bool:
    """Whether `tensor` is STRIDED_SLICE(SHAPE(source), [0], [1], [1]) with shrink_axis_mask 1: the batch."""
    op = producers.get(tensor)
    if op is None or flatbuffer.builtin_code(model, op) != schema.BuiltinOperator.STRIDED_SLICE:
        return False
    inputs = _ints(op.inputs)
    options = op.builtinOptions
    if len(inputs) != 4 or options is None or options.shrinkAxisMask != 1 or options.ellipsisMask \
            or options.newAxisMask or getattr(options, "offset", False):
        return False
    begin, end, strides = (_constant(model, subgraph, i) for i in inputs[1:])
    if any(v is None or v.reshape(-1).tolist() != want for v, want in ((begin, [0]), (end, [1]), (strides, [1]))):
        return False
    shape_op = producers.get(inputs[0])
    return (shape_op is not None and flatbuffer.builtin_code(model, shape_op) == schema.BuiltinOperator.SHAPE
            and _ints(shape_op.inputs) == [source])


def fold_static_reshapes(model: "schema.ModelT") -> int:
    """Replaces each RESHAPE whose shape is PACK(batch of its own input, constants...) by a RESHAPE to the
    constant [-1, constants...] when the input's other dimensions are all known; returns how many.

    The ops that computed the shape are left without consumers; `remove_dead_ops` takes them out."""
    folded = 0
    for subgraph in model.subgraphs or []:
        producers = _producers(subgraph)
        for op in subgraph.operators or []:
            if flatbuffer.builtin_code(model, op) != schema.BuiltinOperator.RESHAPE:
                continue
            inputs = _ints(op.inputs)
            if len(inputs) != 2:
                continue
            pack = producers.get(inputs[1])
            if pack is None or flatbuffer.builtin_code(model, pack) != schema.BuiltinOperator.PACK:
                continue
            if pack.builtinOptions is not None and pack.builtinOptions.axis != 0:
                continue
            parts = _ints(pack.inputs)
            if not parts or not _batch_slice_of_shape(model, subgraph, producers, parts[0], inputs[0]):
                continue
            rest = [_constant(model, subgraph, i) for i in parts[1:]]
            if any(v is None or v.size != 1 for v in rest):
                continue
            dims = [int(v.reshape(-1)[0]) for v in rest]
            source = subgraph.tensors[inputs[0]]
            signature = _ints(source.shapeSignature) or _ints(source.shape)
            if not signature or any(d < 0 for d in signature[1:]) or any(d < 1 for d in dims) \
                    or int(np.prod(signature[1:])) != int(np.prod(dims)):
                continue
            shape = np.asarray([-1, *dims], dtype=np.int32)
            index = flatbuffer.add_tensor(model, subgraph, f"t{len(subgraph.tensors)}", [len(shape)],
                                          schema.TensorType.INT32, shape.tobytes())
            op.inputs = np.asarray([inputs[0], index], dtype=np.int32)
            folded += 1
    return folded


SIDE_EFFECT_FREE = tuple(getattr(schema.BuiltinOperator, name) for name in (
    "SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "CAST", "CONCATENATION", "SLICE",
    "GATHER", "FILL", "RANGE"))
"""The shape-computing ops `remove_dead_ops` may remove: pure functions of their inputs. Anything else
(custom ops, variable assignments, ops without outputs) stays even when nothing reads its outputs."""


def remove_dead_ops(model: "schema.ModelT") -> int:
    """Removes SIDE_EFFECT_FREE operators none of whose outputs is read by another operator or is a graph or
    signature output (repeated, so whole dead chains go); returns how many. Tensors and buffers they leave
    unused go with flatbuffer.remove_unused."""
    removed = 0
    signature_outputs: Dict[int, Set[int]] = {}
    for signature in model.signatureDefs or []:
        signature_outputs.setdefault(int(signature.subgraphIndex), set()).update(
            int(t.tensorIndex) for t in signature.outputs or [])
    for s, subgraph in enumerate(model.subgraphs or []):
        while True:
            read = set(_ints(subgraph.outputs)) | signature_outputs.get(s, set())
            for op in subgraph.operators or []:
                read.update(_ints(op.inputs))
            alive = [op for op in subgraph.operators or []
                     if flatbuffer.builtin_code(model, op) not in SIDE_EFFECT_FREE or not _ints(op.outputs)
                     or any(t in read for t in _ints(op.outputs))]
            if len(alive) == len(subgraph.operators or []):
                break
            removed += len(subgraph.operators) - len(alive)
            subgraph.operators = alive
    return removed


def _tensors(model: "schema.ModelT") -> Iterator["schema.TensorT"]:
    """Every tensor of every subgraph."""
    for subgraph in model.subgraphs or []:
        yield from subgraph.tensors or []


def share_empty_buffers(model: "schema.ModelT") -> int:
    """Points every tensor whose buffer holds no data at the schema's empty buffer 0; returns how many
    tensors moved (their own empty buffers then go with flatbuffer.remove_unused)."""
    moved = 0
    empty = {i for i, buffer in enumerate(model.buffers or [])
             if (buffer.data is None or len(buffer.data) == 0) and not buffer.offset}
    if 0 not in empty:
        return 0
    for tensor in _tensors(model):
        if int(tensor.buffer) != 0 and int(tensor.buffer) in empty:
            tensor.buffer = 0
            moved += 1
    return moved


def drop_informational_metadata(model: "schema.ModelT") -> int:
    """Drops the converter's INFORMATIONAL_METADATA entries and the model description; returns how many
    entries went (their buffers go with flatbuffer.remove_unused)."""
    kept = [m for m in model.metadata or [] if _text(m.name) not in INFORMATIONAL_METADATA]
    dropped = len(model.metadata or []) - len(kept)
    model.metadata = kept
    model.description = None
    return dropped


def name_io_after_signature(model: "schema.ModelT") -> int:
    """Renames graph input and output tensors to their signature keys (when the subgraph has exactly one
    signature and the keys are distinct); returns the bytes of names saved."""
    saved = 0
    by_subgraph: Dict[int, list] = {}
    for signature in model.signatureDefs or []:
        by_subgraph.setdefault(int(signature.subgraphIndex), []).append(signature)
    for s, signatures in by_subgraph.items():
        if len(signatures) != 1 or s >= len(model.subgraphs or []):
            continue
        subgraph = model.subgraphs[s]
        maps = (signatures[0].inputs or []) + (signatures[0].outputs or [])
        keys = [_text(m.name) for m in maps]
        if len(set(keys)) != len(keys) or not all(keys):
            continue
        names = {_text(t.name) for t in subgraph.tensors}
        for tensor_map, key in zip(maps, keys):
            tensor = subgraph.tensors[int(tensor_map.tensorIndex)]
            old = _text(tensor.name)
            if key == old or key in names or len(key) >= len(old):
                continue
            saved += len(old) - len(key)
            names.discard(old)
            names.add(key)
            tensor.name = key
    return saved


def drop_empty_quantization(model: "schema.ModelT") -> int:
    """Removes quantization tables that hold no parameters (no scale, zero point, min, max or details);
    returns how many."""
    dropped = 0
    for tensor in _tensors(model):
        q = tensor.quantization
        if q is None:
            continue
        fields = (q.min, q.max, q.scale, q.zeroPoint)
        if all(f is None or len(f) == 0 for f in fields) and q.details is None and not q.quantizedDimension:
            tensor.quantization = None
            dropped += 1
    return dropped


def drop_internal_shape_signatures(model: "schema.ModelT") -> int:
    """Removes the shape signature of every tensor that is not a graph input or output; returns how many."""
    dropped = 0
    for subgraph in model.subgraphs or []:
        keep = flatbuffer.graph_io(subgraph)
        for index, tensor in enumerate(subgraph.tensors or []):
            if index not in keep and tensor.shapeSignature is not None:
                tensor.shapeSignature = None
                dropped += 1
    return dropped


def drop_redundant_has_rank(model: "schema.ModelT") -> int:
    """Clears has_rank on tensors with a non-empty shape; returns how many."""
    cleared = 0
    for tensor in _tensors(model):
        if tensor.hasRank and len(_ints(tensor.shape)) > 0:
            tensor.hasRank = False
            cleared += 1
    return cleared


def drop_subgraph_names(model: "schema.ModelT") -> int:
    """Removes the subgraphs' names; returns how many."""
    named = [subgraph for subgraph in model.subgraphs or [] if subgraph.name]
    for subgraph in named:
        subgraph.name = None
    return len(named)


def slim(model: "schema.ModelT") -> Dict[str, int]:
    """Applies every cut of this module; returns what each did (counts; bytes for names)."""
    done = {"reshapes_folded": fold_static_reshapes(model)}
    done["dead_ops_removed"] = remove_dead_ops(model)
    done["empty_buffers_shared"] = share_empty_buffers(model)
    done["metadata_dropped"] = drop_informational_metadata(model)
    done["io_name_bytes_saved"] = name_io_after_signature(model)
    done["empty_quantization_dropped"] = drop_empty_quantization(model)
    done["shape_signatures_dropped"] = drop_internal_shape_signatures(model)
    done["has_rank_cleared"] = drop_redundant_has_rank(model)
    done["subgraph_names_dropped"] = drop_subgraph_names(model)
    flatbuffer.remove_unused(model)
    return done


def file_breakdown(model: "schema.ModelT", total_bytes: int, blob_buffers: Set[int],
                   bias_buffers: Set[int]) -> Dict[str, int]:
    """Where a file's bytes go: {"weights": bytes of the compressed blobs, "biases": the dc ops' constant
    biases, "other_constants": every other constant buffer (stock ops' data, metadata), "graph": the rest
    (flatbuffer tables, names, options, signatures, padding), "total"}."""
    sizes = [len(flatbuffer.buffer_bytes(model, i)) for i in range(len(model.buffers or []))]
    weights = sum(sizes[i] for i in blob_buffers)
    biases = sum(sizes[i] for i in bias_buffers - blob_buffers)
    other = sum(sizes) - weights - biases
    return {"weights": weights, "biases": biases, "other_constants": other,
            "graph": total_bytes - weights - biases - other, "total": total_bytes}
