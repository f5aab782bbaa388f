"""The per-layer compression report (the paper's Table 2 columns), measured from the blobs in a .tflite.

`inspect_tflite` builds it from a file alone; `export_tflite` returns the same report for the file it wrote
(plus verification results), so `dc-inspect` and the exporter always agree.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from dc_keras import limits
from dc_keras.export import flatbuffer, op_specs
from dc_keras.export.options import DEPTHWISE_CUSTOM_CODE, OPTIONS_CLASSES
from dc_keras.export.rewrite_base import BLOB_SUFFIX

METADATA_NAME = "dc_keras"
"""Name of the model metadata entry the exporter writes (JSON: format, dense_tflite_bytes, skipped ops)."""

DC_OPS = {spec.custom_code: spec.blob_input for spec in op_specs.SPECS}
"""custom code -> index of the blob among the op's inputs."""


@dataclasses.dataclass
class LayerReport:
    """One compressed layer. Bits are per nonzero weight; rates are compressed size / float32 size."""

    name: str
    op: str
    shape: tuple
    weights: int            # #weights of the layer
    nonzeros: int
    bits: int               # codebook index width (P+Q weight bits)
    index_bits: int         # relative index width (P+Q index bits); 0 for a dense-layout blob
    code_stream_bytes: int
    delta_stream_bytes: int
    codebook_bytes: int
    num_entries: int        # relative-index entries, fillers included
    blob_bytes: int
    coder: str
    layout: str = "sparse"           # "sparse", "dense" or "block"
    block_axis: Optional[str] = None  # block layout: "cols" (L inputs of one output) or "rows" (L outputs)
    block_len: int = 0               # block layout: L
    num_blocks: int = 0              # block layout: stored blocks (each holds block_len codes)

    @property
    def layout_text(self) -> str:
        """"sparse", "dense" or "block <axis> x<L>"."""
        return f"block {self.block_axis} x{self.block_len}" if self.layout == "block" else self.layout

    @property
    def weights_fraction(self) -> float:
        return self.nonzeros / self.weights if self.weights else 0.0

    @property
    def weight_bits_pqh(self) -> float:
        return 8 * self.code_stream_bytes / self.nonzeros if self.nonzeros else 0.0

    @property
    def index_bits_pqh(self) -> float:
        return 8 * self.delta_stream_bytes / self.nonzeros if self.nonzeros else 0.0

    @property
    def pq_bits(self) -> int:
        """Bits of the layer stored with fixed-width codes and indices (no entropy coding)."""
        codes = self.num_blocks * self.block_len if self.layout == "block" else self.nonzeros
        return codes * self.bits + self.num_entries * self.index_bits + 8 * self.codebook_bytes

    @property
    def rate_pq(self) -> float:
        return self.pq_bits / (32 * self.weights) if self.weights else 0.0

    @property
    def rate_pqh(self) -> float:
        return self.blob_bytes / (4 * self.weights) if self.weights else 0.0


@dataclasses.dataclass
class ExportReport:
    """Report of a compressed .tflite: compressed layers, ops left stock, file sizes, verification."""

    layers: List[LayerReport]
    stock: List[dict]                    # {"layer", "op", "reason"}
    tflite_bytes: int
    dense_tflite_bytes: Optional[int]    # the converter's float file before compression (None if unknown)
    path: Optional[str] = None
    verification: Optional[dict] = None  # {"batch sizes", "max_rel_error", "tolerance"} when verify=True
    breakdown: Optional[dict] = None     # slim.file_breakdown: {"weights", "biases", "other_constants", "graph", "total"}

    @property
    def file_rate(self) -> Optional[float]:
        return self.tflite_bytes / self.dense_tflite_bytes if self.dense_tflite_bytes else None

    def totals(self) -> dict:
        weights = sum(l.weights for l in self.layers)
        nnz = sum(l.nonzeros for l in self.layers)
        return {
            "weights": weights,
            "nonzeros": nnz,
            "weights_fraction": nnz / weights if weights else 0.0,
            "weight_bits_pq": sum(l.bits * l.nonzeros for l in self.layers) / nnz if nnz else 0.0,
            "weight_bits_pqh": sum(8 * l.code_stream_bytes for l in self.layers) / nnz if nnz else 0.0,
            "index_bits_pq": sum(l.index_bits * l.nonzeros for l in self.layers) / nnz if nnz else 0.0,
            "index_bits_pqh": sum(8 * l.delta_stream_bytes for l in self.layers) / nnz if nnz else 0.0,
            "rate_pq": sum(l.pq_bits for l in self.layers) / (32 * weights) if weights else 0.0,
            "rate_pqh": sum(l.blob_bytes for l in self.layers) / (4 * weights) if weights else 0.0,
            **self._totals_with_stock(weights),
        }

    def _totals_with_stock(self, compressed_weights: int) -> dict:
        """Rates over every weight of the weighted ops, the ones left stock counted at float32: what the
        whole network's weights shrank by, not only its compressed layers'."""
        stock = sum(int(s.get("weights") or 0) for s in self.stock)
        everything = compressed_weights + stock
        if not everything:
            return {"stock_weights": stock, "rate_pq_all": 0.0, "rate_pqh_all": 0.0}
        return {"stock_weights": stock,
                "rate_pq_all": (sum(l.pq_bits for l in self.layers) + 32 * stock) / (32 * everything),
                "rate_pqh_all": (sum(l.blob_bytes for l in self.layers) + 4 * stock) / (4 * everything)}

    def to_dict(self) -> dict:
        layers = []
        for l in self.layers:
            row = dataclasses.asdict(l)
            row.update(layout_text=l.layout_text, weights_fraction=l.weights_fraction, weight_bits_pqh=l.weight_bits_pqh,
                       index_bits_pqh=l.index_bits_pqh, rate_pq=l.rate_pq, rate_pqh=l.rate_pqh)
            layers.append(row)
        return {"path": self.path, "layers": layers, "total": self.totals(), "stock": self.stock,
                "tflite_bytes": self.tflite_bytes, "dense_tflite_bytes": self.dense_tflite_bytes,
                "verification": self.verification, "file_breakdown": self.breakdown}

    def format(self) -> str:
        """The report as a text table (what dc-inspect prints)."""
        head = ("layer", "op", "layout", "#weights", "weights%", "w bits P+Q", "w bits P+Q+H", "idx bits P+Q",
                "idx bits P+Q+H", "rate P+Q", "rate P+Q+H", "blob B")
        rows = []
        for l in self.layers:
            rows.append((l.name, l.op, l.layout_text, _count(l.weights), f"{100 * l.weights_fraction:.1f}%", str(l.bits),
                         f"{l.weight_bits_pqh:.2f}", str(l.index_bits) if l.index_bits else "-",
                         f"{l.index_bits_pqh:.2f}" if l.index_bits else "-", f"{100 * l.rate_pq:.2f}%",
                         f"{100 * l.rate_pqh:.2f}%", str(l.blob_bytes)))
        t = self.totals()
        if self.layers:
            rows.append(("total", "", "", _count(t["weights"]), f"{100 * t['weights_fraction']:.1f}%",
                         f"{t['weight_bits_pq']:.2f}", f"{t['weight_bits_pqh']:.2f}", f"{t['index_bits_pq']:.2f}",
                         f"{t['index_bits_pqh']:.2f}",
                         f"{100 * t['rate_pq']:.2f}% ({1 / t['rate_pq']:.0f}x)" if t["rate_pq"] else "-",
                         f"{100 * t['rate_pqh']:.2f}% ({1 / t['rate_pqh']:.0f}x)" if t["rate_pqh"] else "-",
                         str(sum(l.blob_bytes for l in self.layers))))
        widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [head] + rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if self.stock:
            lines.append("")
            lines.append("left stock (run by TFLite's own kernels):")
            lines += [f"  {s['layer']} ({s['op']}): {s['reason']}" for s in self.stock]
        lines.append("")
        if self.dense_tflite_bytes:
            lines.append(f".tflite size: {self.tflite_bytes} B compressed vs {self.dense_tflite_bytes} B dense float "
                         f"({self.dense_tflite_bytes / self.tflite_bytes:.1f}x smaller)")
        else:
            lines.append(f".tflite size: {self.tflite_bytes} B (dense size unknown: file not written by dc_keras)")
        if self.breakdown:
            lines.append(format_breakdown(self.breakdown))
        if self.verification:
            v = self.verification
            lines.append(f"verified through the dc delegate: batch sizes {v['batch_sizes']}, max relative error "
                         f"{v['max_rel_error']:.2e} (tolerance {v['tolerance']:.2e})")
        return "\n".join(lines)


def format_breakdown(breakdown: dict) -> str:
    """One line saying where a .tflite's bytes go (slim.file_breakdown's dict)."""
    return (f"file bytes: weights {breakdown['weights']} B, biases {breakdown['biases']} B, other constants "
            f"and metadata {breakdown['other_constants']} B, graph/names/padding {breakdown['graph']} B "
            f"(total {breakdown['total']} B)")


def _count(n: int) -> str:
    return f"{n / 1000:.1f}K" if n >= 1000 else str(n)


def layer_report(name: str, op: str, blob: bytes) -> LayerReport:
    """LayerReport of one blob, from its header (sizes of the real streams)."""
    from dc_keras import codec

    info = codec.parse_info(blob)
    # A block layout's header counts blocks; its nonzero weights are counted from the decoded values.
    nonzeros = int(np.count_nonzero(codec.decode(blob))) if info.block_axis else int(info.num_nonzeros)
    return LayerReport(
        name=name, op=op, shape=tuple(int(d) for d in info.shape), weights=int(info.num_elements),
        nonzeros=nonzeros, bits=int(info.bits), index_bits=int(info.index_bits),
        code_stream_bytes=int(info.code_stream_bytes), delta_stream_bytes=int(info.delta_stream_bytes),
        codebook_bytes=int(info.codebook_bytes), num_entries=int(info.num_entries), blob_bytes=int(info.total_bytes),
        coder=f"{info.delta_coder}/{info.code_coder}", layout=info.layout, block_axis=info.block_axis,
        block_len=int(info.block_len), num_blocks=int(info.num_nonzeros) if info.block_axis else 0)


class InvalidModelError(ValueError):
    """A .tflite that the dc delegate would refuse to run: a dc op whose options, blob or bias disagree."""


def read_metadata(model: "schema.ModelT") -> dict:
    """The exporter's metadata entry ({"format", "dense_tflite_bytes", "stock"}), {} when there is none.

    Raises ValueError when the entry is there but malformed: not JSON, not an object, or fields of the
    wrong type (so that a report never shows values read from garbage).
    """
    for metadata in model.metadata or []:
        name = metadata.name.decode() if isinstance(metadata.name, bytes) else metadata.name
        if name == METADATA_NAME:
            try:
                entry = json.loads(flatbuffer.buffer_bytes(model, metadata.buffer).decode())
            except (UnicodeDecodeError, json.JSONDecodeError, IndexError, TypeError) as error:
                raise ValueError(f"the {METADATA_NAME!r} metadata entry is not readable JSON: {error}") from None
            _check_metadata(entry)
            return entry
    return {}


def _check_metadata(entry) -> None:
    what = f"the {METADATA_NAME!r} metadata entry"
    if not isinstance(entry, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(entry).__name__} {_short(entry)}")
    dense = entry.get("dense_tflite_bytes")
    if dense is not None and (not limits.is_int(dense) or dense < 0):
        raise ValueError(f"{what}: dense_tflite_bytes must be a byte count, got {_short(dense)}")
    stock = entry.get("stock", [])
    if not isinstance(stock, list):
        raise ValueError(f"{what}: stock must be a list of {{layer, op, reason}} objects, got {_short(stock)}")
    for item in stock:
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("layer", "op", "reason")):
            raise ValueError(f"{what}: stock entries must be {{layer, op, reason}} objects of strings, "
                             f"got {_short(item)}")
        count = item.get("weights")
        if count is not None and (not limits.is_int(count) or count < 0):
            raise ValueError(f"{what}: a stock entry's weights must be a count, got {_short(item)}")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


# The delegate's own limit on a depthwise kernel's taps (tflite_delegate/src/kernels/depthwise_conv2d.cc).
_MAX_DEPTHWISE_TAPS = 1 << 20


BIAS_WIDTHS = {schema.TensorType.FLOAT32: 4, schema.TensorType.FLOAT16: 2}
"""The bias types the delegate reads (TensorType -> bytes per value); it widens float16 to float32 at load."""


def _type_name(tensor_type: int) -> str:
    names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    return names.get(int(tensor_type), f"type {tensor_type}")


def delegate_problem(custom: str, options, info, bias_bytes: Optional[int],
                     bias_type: int = schema.TensorType.FLOAT32) -> Optional[str]:
    """Why the dc delegate would refuse this op (None if it would not): the checks its kernels make in
    Init, with the codec's and the TF op's element limit.

    Args:
      custom: the op's custom code; options: its unpacked options record; info: codec.parse_info of its
      blob; bias_bytes: size of its constant bias buffer (None when absent or not constant); bias_type:
      the bias tensor's TensorType (FLOAT32 or FLOAT16 are read, BIAS_WIDTHS).
    """
    expected = tuple(int(d) for d in options.blob_shape())
    if any(d < 1 for d in expected):
        return f"its options give a non-positive weight shape {list(expected)}"
    shape = tuple(int(d) for d in info.shape)
    if shape != expected:
        return (f"its blob declares shape {list(shape)} ({int(info.num_elements)} weights) but its options say "
                f"{list(expected)}")
    if int(info.num_elements) > limits.MAX_DECODED_ELEMENTS:
        return (f"its blob holds {int(info.num_elements)} weights, more than the {limits.MAX_DECODED_ELEMENTS} "
                "the dc readers decode")
    if custom == DEPTHWISE_CUSTOM_CODE and expected[1] > _MAX_DEPTHWISE_TAPS:
        return f"its {options.kernel_h}x{options.kernel_w} kernel exceeds the delegate's {_MAX_DEPTHWISE_TAPS} taps"
    if bias_bytes is not None and op_specs.BY_CUSTOM_CODE[custom].has_bias:
        width = BIAS_WIDTHS.get(int(bias_type))
        if width is None:
            return f"its bias is {_type_name(bias_type)}, the delegate reads FLOAT32 or FLOAT16"
        if bias_bytes != width * expected[0]:
            return (f"its bias holds {bias_bytes // width} values, expected {expected[0]} ({bias_bytes} bytes of "
                    f"{_type_name(bias_type)})")
    return None


def _bias(model, subgraph, op) -> Tuple[Optional[int], int]:
    """(byte size of the op's constant bias, its TensorType); (None, FLOAT32) when it has none."""
    inputs = list(op.inputs)
    if len(inputs) < 3 or int(inputs[2]) < 0:
        return None, schema.TensorType.FLOAT32
    tensor = subgraph.tensors[int(inputs[2])]
    data = flatbuffer.buffer_bytes(model, tensor.buffer)
    return (len(data), int(tensor.type)) if data else (None, schema.TensorType.FLOAT32)


def report_from_model(model: "schema.ModelT", tflite_bytes: int, path: Optional[str] = None) -> ExportReport:
    """ExportReport of a parsed .tflite.

    Raises:
      InvalidModelError: the dc delegate would refuse a dc op of the file (options, blob header, blob shape
        against the options, element count or bias size); the message names every such layer and why.
      ValueError: the dc_keras metadata entry is malformed.
    """
    from dc_keras import codec

    layers, problems = [], []
    blob_buffers, bias_buffers = set(), set()
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            custom = flatbuffer.custom_code(model, op)
            if custom in DC_OPS:
                blob_tensor = subgraph.tensors[int(op.inputs[DC_OPS[custom]])]
                blob_buffers.add(int(blob_tensor.buffer))
                if op_specs.BY_CUSTOM_CODE[custom].has_bias and len(op.inputs) > 2 and int(op.inputs[2]) >= 0:
                    bias_buffers.add(int(subgraph.tensors[int(op.inputs[2])].buffer))
                tensor_name = blob_tensor.name.decode() if isinstance(blob_tensor.name, bytes) else blob_tensor.name
                name = tensor_name[:-len(BLOB_SUFFIX)] if tensor_name.endswith(BLOB_SUFFIX) else tensor_name
                options_class = OPTIONS_CLASSES[custom]
                blob = flatbuffer.buffer_bytes(model, blob_tensor.buffer)
                try:
                    options = options_class.unpack(np.asarray(op.customOptions, np.uint8).tobytes())
                    problem = delegate_problem(custom, options, codec.parse_info(blob),
                                               *_bias(model, subgraph, op))
                except ValueError as error:  # malformed options, or a blob the codec rejects (CodecError)
                    problem = str(error)
                if problem is not None:
                    problems.append(f"layer {name!r} ({custom}): {problem}")
                    continue
                layers.append(layer_report(name, custom, blob))
    if problems:
        raise InvalidModelError("the dc delegate would refuse this file: " + "; ".join(problems))
    metadata = read_metadata(model)
    stock = list(metadata.get("stock", []))
    from dc_keras.export import slim

    return ExportReport(layers=layers, stock=stock, tflite_bytes=tflite_bytes,
                        dense_tflite_bytes=metadata.get("dense_tflite_bytes"), path=path,
                        breakdown=slim.file_breakdown(model, tflite_bytes, blob_buffers, bias_buffers))


def inspect_tflite(source: Union[str, Path, bytes]) -> ExportReport:
    """The compression report of a .tflite file (path or bytes), from the file alone.

    Raises:
      OSError: the path cannot be read (FileNotFoundError, IsADirectoryError, PermissionError, ...).
      InvalidModelError: the dc delegate would refuse a dc op of the file (see report_from_model).
      ValueError: the file is not a TFLite flatbuffer, or its dc_keras metadata entry is malformed.
    """
    if isinstance(source, (bytes, bytearray)):
        data, path = bytes(source), None
    else:
        path = str(source)
        data = Path(source).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"{path or 'input'} is not a .tflite file (no TFL3 identifier)")
    model = flatbuffer.load(data)
    try:
        return report_from_model(model, len(data), path)
    except (IndexError, TypeError, AttributeError) as error:  # tensor or buffer indices out of range, ...
        raise ValueError(f"{path or 'input'} is a malformed .tflite: {type(error).__name__}: {error}") from None
