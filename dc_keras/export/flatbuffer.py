"""Reading, editing and writing .tflite flatbuffers with TensorFlow's own object API.

Edits go through `tensorflow.lite.tools.flatbuffer_utils` and `schema_py_generated` (ModelT objects), never
through hand-written byte offsets. Two things that API does not do are added here: removing tensors and
buffers nothing refers to any more, and keeping every buffer 16-byte aligned (the converter's own
alignment; kernels and XNNPACK read constant data in place, so a float bias must not land misaligned).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, Iterable, List, Set

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from dc_keras import atomic

_BUFFER_ALIGNMENT = 16
_BYTE_BUFFER_ALIGNMENT = 4  # a flatbuffer vector's length prefix needs 4; byte streams need no more


def load(data: bytes) -> "schema.ModelT":
    """ModelT of a .tflite's bytes.

    Raises:
      ValueError: the bytes do not parse as a TFLite flatbuffer (truncated or corrupt); the flatbuffers
        runtime itself fails with struct/index errors that name no file or cause.
    """
    try:
        return flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    except (struct.error, IndexError, TypeError, UnicodeDecodeError) as error:
        raise ValueError(f"not a valid TFLite flatbuffer ({len(data)} bytes; truncated or corrupt): {error}") from None


class _AlignedBufferT(schema.BufferT):
    """BufferT whose data vector is aligned to _BUFFER_ALIGNMENT bytes in the output."""

    alignment = _BUFFER_ALIGNMENT

    def Pack(self, builder):
        data = None
        if self.data is not None:
            payload = np.asarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), self.alignment)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        schema.BufferAddOffset(builder, self.offset)
        schema.BufferAddSize(builder, self.size)
        return schema.BufferEnd(builder)


class _ByteBufferT(_AlignedBufferT):
    """A buffer read byte by byte (a compressed blob): 4-byte aligned, saving up to 12 bytes of padding."""

    alignment = _BYTE_BUFFER_ALIGNMENT


def serialize(model: "schema.ModelT", byte_buffers: Iterable[int] = ()) -> bytes:
    """Bytes of `model`, with 16-byte aligned buffers except `byte_buffers` (indices of buffers only read as
    bytes, such as compressed blobs), which are 4-byte aligned."""
    byte_buffers = set(int(i) for i in byte_buffers)
    for index, buffer in enumerate(model.buffers or []):
        buffer.__class__ = _ByteBufferT if index in byte_buffers else _AlignedBufferT
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def write_atomic(path, data: bytes) -> Path:
    """Writes `data` to `path` atomically and durably (dc_keras.atomic.atomic_write), creating the directory;
    a reader never sees a half-written model and a failed write leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic.atomic_write(path, data)


def buffer_bytes(model: "schema.ModelT", index: int) -> bytes:
    data = model.buffers[index].data
    return b"" if data is None else np.asarray(data, dtype=np.uint8).tobytes()


def add_buffer(model: "schema.ModelT", payload: bytes) -> int:
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8).copy()
    model.buffers.append(buffer)
    return len(model.buffers) - 1


def add_tensor(model: "schema.ModelT", subgraph: "schema.SubGraphT", name: str, shape: List[int],
               tensor_type: int, payload: bytes) -> int:
    """Appends a constant tensor holding `payload` to `subgraph`; returns its index."""
    tensor = schema.TensorT()
    tensor.name = name
    tensor.shape = np.asarray(shape, dtype=np.int32)
    tensor.type = tensor_type
    tensor.buffer = add_buffer(model, payload)
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def custom_opcode_index(model: "schema.ModelT", custom_code: str) -> int:
    """Index of the OperatorCode of custom op `custom_code`, added if missing."""
    for i, code in enumerate(model.operatorCodes):
        if code.builtinCode == schema.BuiltinOperator.CUSTOM and _text(code.customCode) == custom_code:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = schema.BuiltinOperator.CUSTOM
    # Readers of old schemas look at the 8-bit field; CUSTOM (32) fits in it.
    code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = custom_code
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def builtin_code(model: "schema.ModelT", operator: "schema.OperatorT") -> int:
    code = model.operatorCodes[operator.opcodeIndex]
    # Files written by old converters only fill deprecatedBuiltinCode.
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def custom_code(model: "schema.ModelT", operator: "schema.OperatorT") -> str | None:
    code = model.operatorCodes[operator.opcodeIndex]
    if builtin_code(model, operator) != schema.BuiltinOperator.CUSTOM:
        return None
    return _text(code.customCode)


def text(value) -> str:
    """A flatbuffer string field (bytes or str, None for absent) as str."""
    return value.decode() if isinstance(value, (bytes, bytearray)) else (value or "")


_text = text


def graph_io(subgraph: "schema.SubGraphT") -> Set[int]:
    """Indices of the subgraph's input and output tensors."""
    return {int(i) for i in _ints(subgraph.inputs)} | {int(i) for i in _ints(subgraph.outputs)}


def remove_unused(model: "schema.ModelT") -> None:
    """Drops tensors no operator, subgraph input/output or signature refers to, then buffers no tensor or
    metadata refers to, then operator codes no operator uses; renumbers every reference."""
    signatures_by_subgraph: Dict[int, list] = {}
    for signature in model.signatureDefs or []:
        signatures_by_subgraph.setdefault(signature.subgraphIndex, []).append(signature)

    for s, subgraph in enumerate(model.subgraphs):
        used = graph_io(subgraph)
        for op in subgraph.operators or []:
            for field in (op.inputs, op.outputs, op.intermediates):
                used.update(int(i) for i in _ints(field) if i >= 0)
        for signature in signatures_by_subgraph.get(s, []):
            for tensor_map in (signature.inputs or []) + (signature.outputs or []):
                used.add(int(tensor_map.tensorIndex))
        old_to_new = {old: new for new, old in enumerate(sorted(used))}
        subgraph.tensors = [subgraph.tensors[old] for old in sorted(used)]
        remap = np.vectorize(lambda i: old_to_new[int(i)] if i >= 0 else -1, otypes=[np.int32])
        subgraph.inputs = remap(_ints(subgraph.inputs)) if len(_ints(subgraph.inputs)) else subgraph.inputs
        subgraph.outputs = remap(_ints(subgraph.outputs)) if len(_ints(subgraph.outputs)) else subgraph.outputs
        for op in subgraph.operators or []:
            op.inputs = remap(_ints(op.inputs)) if len(_ints(op.inputs)) else op.inputs
            op.outputs = remap(_ints(op.outputs)) if len(_ints(op.outputs)) else op.outputs
            if op.intermediates is not None and len(_ints(op.intermediates)):
                op.intermediates = remap(_ints(op.intermediates))
        for signature in signatures_by_subgraph.get(s, []):
            for tensor_map in (signature.inputs or []) + (signature.outputs or []):
                tensor_map.tensorIndex = old_to_new[int(tensor_map.tensorIndex)]

    # Buffer 0 is the schema's empty sentinel and always stays first.
    used_buffers = {0}
    for subgraph in model.subgraphs:
        used_buffers.update(int(t.buffer) for t in subgraph.tensors)
    for metadata in model.metadata or []:
        used_buffers.add(int(metadata.buffer))
    used_buffers.update(int(b) for b in _ints(model.metadataBuffer))
    order = sorted(used_buffers)
    buffer_map = {old: new for new, old in enumerate(order)}
    model.buffers = [model.buffers[old] for old in order]
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.buffer = buffer_map[int(tensor.buffer)]
    for metadata in model.metadata or []:
        metadata.buffer = buffer_map[int(metadata.buffer)]
    if model.metadataBuffer is not None and len(_ints(model.metadataBuffer)):
        model.metadataBuffer = np.asarray([buffer_map[int(b)] for b in _ints(model.metadataBuffer)], np.int32)

    used_codes = sorted({int(op.opcodeIndex) for sg in model.subgraphs for op in (sg.operators or [])})
    code_map = {old: new for new, old in enumerate(used_codes)}
    model.operatorCodes = [model.operatorCodes[old] for old in used_codes]
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            op.opcodeIndex = code_map[int(op.opcodeIndex)]


def _ints(values):
    if values is None:
        return np.zeros(0, dtype=np.int32)
    return np.asarray(values, dtype=np.int64).reshape(-1)


def op_inputs(op: "schema.OperatorT") -> List[int]:
    """An operator's input tensor indices as Python ints ([] when it has none; -1 marks an omitted input)."""
    return [int(i) for i in _ints(op.inputs)]


def tensor_data(model: "schema.ModelT", tensor: "schema.TensorT") -> np.ndarray | None:
    """The constant data of a tensor as a numpy array of its shape (None for a non-constant tensor)."""
    dtypes = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT32: np.int32,
              schema.TensorType.UINT8: np.uint8, schema.TensorType.INT8: np.int8,
              schema.TensorType.INT64: np.int64, schema.TensorType.FLOAT16: np.float16}
    payload = buffer_bytes(model, tensor.buffer)
    if not payload or tensor.type not in dtypes:
        return None
    shape = [int(d) for d in _ints(tensor.shape)]
    return np.frombuffer(payload, dtype=dtypes[tensor.type]).reshape(shape)


def shorten_internal_names(model: "schema.ModelT", keep_suffix: str) -> int:
    """Renames tensors that are neither graph inputs/outputs nor named `*<keep_suffix>` to "t<index>".

    The converter names intermediate tensors after the whole TF op path they fused
    ("model/ip1_1/MatMul;model/ip1_1/Relu;..."): on LeNet-300-100 that is ~700 bytes, 2-3% of a compressed
    file whose size is the product. Graph inputs and outputs keep their names (users look them up), and so
    do the blob tensors (dc-inspect names layers after them). Returns the bytes of names saved.
    """
    saved = 0
    for subgraph in model.subgraphs or []:
        keep = graph_io(subgraph)
        for index, tensor in enumerate(subgraph.tensors or []):
            name = _text(tensor.name) if tensor.name is not None else ""
            if index in keep or name.endswith(keep_suffix):
                continue
            short = f"t{index}"
            if len(short) < len(name):
                saved += len(name) - len(short)
                tensor.name = short
    return saved
