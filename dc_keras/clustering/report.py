"""Expected size after pruning + trained quantization (the paper's Table 2 "P+Q" columns), before export.

Accounting (Deep Compression, Sections 2-3): a layer's weights are stored as a sparse list in C order of the
Keras weight; each entry holds a codebook index (`weight bits`) and the gap to the previous entry
(`index bits`: 8 for conv, 5 for fully-connected layers by default, `layer_registry.DEFAULT_INDEX_BITS`).
A gap larger than 2**index_bits - 1 zeros needs filler entries (a stored zero that only advances the
position), which cost as much as a real entry. The codebook costs 32 bits per centroid. A layer whose
sparse form would be larger than dense storage (an unpruned layer) is counted dense: one index per weight
plus the codebook. A weight that is not quantized counts 32 bits.

Works on models wrapped by `cluster_weights` (bits from their number of clusters) and on plain models such
as the output of `strip_clustering` (bits inferred from the number of distinct nonzero values).

`CompressionRow`, `Column`, `format_table` and `CompressionReport.add_column` are meant for reuse: the
exporter appends measured P+Q+H columns to the same rows.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import keras
import numpy as np

from dc_keras import layer_registry, limits
from dc_keras.per_layer import resolve_per_layer
from dc_keras.codec.encoder import block_stats, detect_block, fillers_before
from dc_keras.clustering.wrapper import MAX_BITS, ClusterWeights, bits_for_clusters

__all__ = ["CompressionRow", "Column", "CompressionReport", "compression_report", "estimate_row",
           "format_table", "BASE_COLUMNS", "count_fillers"]

FLOAT_BITS = 32  # the paper's baseline weight and its codebook entries


@dataclass
class CompressionRow:
    """One layer's (or the total's) expected storage. Sizes in bits.

    Attributes:
      layer: layer name ("total" for the sum row; "layer/weight" for a layer with several weights).
      kind: "conv", "fc", "embedding", "custom" ("" for the total).
      weights: number of weights (#weights).
      nonzero: weights left after pruning.
      clusters: codebook entries (None when the weights are not quantized).
      weight_bits: bits per stored weight (the codebook index; 32 when not quantized). Float on the total.
      index_bits: bits of the relative position of a sparse entry (0 when stored dense). Float on the total.
      fillers: filler entries for gaps wider than the index bits allow.
      codebook_bits: bits of the codebook (32 per centroid).
      size_bits: total expected storage of the layer at this stage (P+Q).
      storage: "sparse", "dense" or "block" ("" for the total). A block row stores `blocks` aligned blocks
        of `block` (e.g. "cols16", the exporter's block layout): one index per block, one code per weight.
      extra: further columns keyed by `Column.key` (e.g. the exporter's measured P+Q+H figures).
    """

    layer: str
    kind: str
    weights: int
    nonzero: int
    clusters: Optional[int]
    weight_bits: float
    index_bits: float
    fillers: int
    codebook_bits: int
    size_bits: int
    storage: str
    extra: Dict[str, Any] = field(default_factory=dict)
    block: str = ""
    blocks: int = 0

    @property
    def block_len(self) -> int:
        """L of a block row (0 otherwise)."""
        return int(self.block[4:]) if self.block else 0

    @property
    def density(self) -> float:
        """Fraction of weights kept by pruning (weights% (P))."""
        return self.nonzero / self.weights if self.weights else 0.0

    @property
    def original_bits(self) -> int:
        """Size of the dense float32 weights."""
        return self.weights * FLOAT_BITS

    @property
    def rate(self) -> float:
        """Compressed size as a fraction of the original (the paper's "compress rate")."""
        return self.size_bits / self.original_bits if self.original_bits else 0.0

    @property
    def ratio(self) -> float:
        """Original size / compressed size (the paper's "32x")."""
        return self.original_bits / self.size_bits if self.size_bits else math.inf

    def to_dict(self) -> Dict[str, Any]:
        """Plain-JSON view, derived figures included."""
        data = asdict(self)
        data.update(density=self.density, original_bits=self.original_bits, rate=self.rate, ratio=self.ratio)
        return data


@dataclass
class Column:
    """A table column: `key` is a CompressionRow attribute/property or a key of `row.extra`."""

    key: str
    header: str
    format: Callable[[Any, CompressionRow], str]

    def value(self, row: CompressionRow) -> Any:
        """The raw value of this column for `row` (None when the row has none)."""
        if self.key in row.extra:
            return row.extra[self.key]
        return getattr(row, self.key, None)

    def render(self, row: CompressionRow) -> str:
        """The formatted cell; "-" for a missing value."""
        value = self.value(row)
        return "-" if value is None else self.format(value, row)


def _bits_text(value, row: CompressionRow) -> str:
    if not value:
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _rate_text(value, row: CompressionRow) -> str:
    return f"{100 * value:.2f}% ({row.ratio:.1f}x)"


BASE_COLUMNS: List[Column] = [
    Column("layer", "layer", lambda v, r: str(v)),
    Column("weights", "#weights", lambda v, r: f"{v:,}"),
    Column("density", "weights% (P)", lambda v, r: f"{100 * v:.1f}%"),
    Column("weight_bits", "weight bits (P+Q)", _bits_text),
    Column("index_bits", "index bits (P+Q)", _bits_text),
    Column("rate", "compress rate (P+Q)", _rate_text),
]


def format_table(rows: Sequence[CompressionRow], columns: Sequence[Column]) -> str:
    """Fixed-width text table of `rows` under `columns` (first column left-aligned, the rest right)."""
    cells = [[c.header for c in columns]] + [[c.render(r) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for n, line in enumerate(cells):
        text = "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        lines.append(text.rstrip())
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


class CompressionReport:
    """Per-layer rows plus a total, printable as the paper's Table 2 (P+Q) and exportable as JSON."""

    def __init__(self, rows: List[CompressionRow], title: str = "Deep Compression: pruning + quantization (P+Q)"):
        self.rows = rows
        self.title = title
        self.extra_columns: List[Column] = []
        self.total = _total(rows)

    def add_column(self, column: Column, values: Dict[str, Any], total: Any = None) -> None:
        """Add a column: `values` maps layer name -> value, `total` is the value on the total row."""
        unknown = set(values) - {r.layer for r in self.rows}
        if unknown:
            raise ValueError(f"add_column {column.key!r}: no rows named {sorted(unknown)}")
        for row in self.rows:
            if row.layer in values:
                row.extra[column.key] = values[row.layer]
        if total is not None:
            self.total.extra[column.key] = total
        self.extra_columns = [c for c in self.extra_columns if c.key != column.key] + [column]

    @property
    def columns(self) -> List[Column]:
        """The base columns followed by the added ones."""
        return BASE_COLUMNS + self.extra_columns

    def to_text(self) -> str:
        """The table as text, with a title line."""
        return f"{self.title}\n" + format_table(self.rows + [self.total], self.columns)

    def __str__(self) -> str:
        return self.to_text()

    def to_dict(self) -> Dict[str, Any]:
        """{"title", "columns": [{"key", "header"}], "layers": [...], "total": {...}}."""
        return {"title": self.title,
                "columns": [{"key": c.key, "header": c.header} for c in self.columns],
                "layers": [r.to_dict() for r in self.rows],
                "total": self.total.to_dict()}

    def to_json(self, **kwargs) -> str:
        """JSON text of `to_dict()` (kwargs go to json.dumps, e.g. indent=2)."""
        return json.dumps(self.to_dict(), default=_json_default, **kwargs)

    @property
    def size_bytes(self) -> float:
        """Expected total size of the compressed weights, in bytes."""
        return self.total.size_bits / 8


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _total(rows: List[CompressionRow]) -> CompressionRow:
    # Codes stored per row, and index entries (fillers included) per row that has indices.
    codes = [r.nonzero + r.fillers if r.storage == "sparse" else r.blocks * r.block_len if r.storage == "block"
             else r.weights for r in rows]
    indices = [r.nonzero + r.fillers if r.storage == "sparse" else r.blocks + r.fillers if r.storage == "block"
               else 0 for r in rows]
    stored = sum(codes)
    indexed = sum(indices)
    weight_bits = sum(c * r.weight_bits for c, r in zip(codes, rows)) / stored if stored else 0.0
    index_bits = sum(e * r.index_bits for e, r in zip(indices, rows)) / indexed if indexed else 0.0
    return CompressionRow(
        layer="total", kind="", weights=sum(r.weights for r in rows), nonzero=sum(r.nonzero for r in rows),
        clusters=None, weight_bits=round(weight_bits, 3), index_bits=round(index_bits, 3),
        fillers=sum(r.fillers for r in rows), codebook_bits=sum(r.codebook_bits for r in rows),
        size_bits=sum(r.size_bits for r in rows), storage="")


def count_fillers(values: np.ndarray, index_bits: int) -> int:
    """Filler entries needed to store the nonzeros of `values` (C order) with `index_bits` relative indices.

    The rule is the codec's own (`dc_keras.codec.encoder.fillers_before`: a run of z zeros before a
    nonzero needs z // (2**index_bits - 1) fillers), so the estimate equals what the exporter writes.
    Trailing zeros need none (the entry count ends the list).
    """

    positions = np.flatnonzero(np.asarray(values).reshape(-1))
    if positions.size == 0:
        return 0
    gaps = np.diff(positions, prepend=-1) - 1
    return int(np.sum(fillers_before(gaps, index_bits)))


def estimate_row(layer: str, kind: str, values: np.ndarray, index_bits: int,
                 clusters: Optional[int] = None, blocks: Optional[bool] = None) -> CompressionRow:
    """Expected P+Q storage of one weight tensor.

    Args:
      values: the weights as used (shared values, zeros where pruned).
      index_bits: bits of a sparse entry's relative index.
      clusters: the codebook size when known (a clustering wrapper); None infers it from the number of
        distinct nonzero values, and counts the weights as unquantized floats when that is not smaller.
      blocks: whether the exporter may store the weight in a block layout (its dc op has block loops: a
        fully-connected kernel, a Conv1D/Conv2D kernel); None means kind == "fc".

    Such a kernel ([in, out], or [..., in, out] for a convolution) pruned in aligned blocks is also costed as
    the block layout the exporter would detect in its [out, ...] form (dc_keras.codec.encoder.detect_block):
    one index per block, a code per weight of every stored block (edge positions included), zero joining the
    codebook when a stored block holds one.
    """
    flat = np.asarray(values).reshape(-1)
    n = int(flat.size)
    nonzero = int(np.count_nonzero(flat))
    has_zeros = nonzero < n
    fillers = count_fillers(flat, index_bits)
    if clusters is None:
        distinct = int(np.unique(flat[flat != 0]).size)
        candidates = [(None, FLOAT_BITS, 0)]
        if 0 < distinct <= 2 ** MAX_BITS:
            candidates.append((distinct, bits_for_clusters(distinct), distinct * FLOAT_BITS))
    else:
        candidates = [(int(clusters), bits_for_clusters(clusters), int(clusters) * FLOAT_BITS)]
    block_option = _block_option(values, index_bits) if (kind == "fc" if blocks is None else blocks) else None
    best = None
    for k, bits, codebook in candidates:
        # (storage, weight bits, index bits, fillers, codebook bits, size)
        options = []
        if has_zeros:
            options.append(("sparse", bits, int(index_bits), fillers, codebook,
                            (nonzero + fillers) * (bits + int(index_bits)) + codebook))
        if k is None:
            options.append(("dense", bits, 0, 0, 0, n * bits))
        else:
            # Dense storage needs a code for zero too when the layer has any.
            dense_k = k + (1 if has_zeros else 0)
            dense_bits = bits_for_clusters(dense_k)
            options.append(("dense", dense_bits, 0, 0, dense_k * FLOAT_BITS, n * dense_bits + dense_k * FLOAT_BITS))
        if k is not None and block_option is not None:
            block, blocks, block_fillers, zero_inside = block_option
            block_k = k + int(zero_inside)
            if block_k <= 2 ** MAX_BITS:
                block_bits = bits_for_clusters(block_k)
                length = int(block[4:])
                options.append((block, block_bits, int(index_bits), block_fillers, block_k * FLOAT_BITS,
                                blocks * length * block_bits + (blocks + block_fillers) * int(index_bits)
                                + block_k * FLOAT_BITS, blocks))
        for option in options:
            # The exporter keeps a block layout when it is not larger: ties go to it.
            better = best is None or option[5] < best[1][5] or (option[5] == best[1][5] and len(option) > 6)
            if better:
                best = (k, option)
    k, (storage, wbits, ibits, nfill, codebook_bits, size, *block_blocks) = best
    block = storage if block_blocks else ""
    return CompressionRow(layer=layer, kind=kind, weights=n, nonzero=nonzero, clusters=k, weight_bits=wbits,
                          index_bits=ibits, fillers=nfill, codebook_bits=codebook_bits, size_bits=int(size),
                          storage="block" if block else storage, block=block,
                          blocks=block_blocks[0] if block_blocks else 0)


def _block_option(values: np.ndarray, index_bits: int):
    """(block name such as "cols16", stored blocks, fillers, whether a zero lies inside a stored block) of the
    block layout the exporter would detect in a kernel's stored form (FC [in, out] -> [out, in]; conv
    [kh, kw, in, out] -> TFLite's [out, kh, kw, in], as [out, kh * kw * in]), or None."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim < 2:
        return None
    stored = np.moveaxis(values, -1, 0).reshape(values.shape[-1], -1)
    found = detect_block(stored)
    if found is None:
        return None
    axis, length = found
    blocks, fillers, zero_inside = block_stats(stored, axis, length)
    return f"{axis}{length}", blocks, fillers[int(index_bits)], zero_inside


def _index_bits_for(name: str, kind: str, index_bits) -> int:
    value = resolve_per_layer(index_bits, name, valid=limits.check_index_bits, label=f"layer {name!r}: index_bits")
    return layer_registry.DEFAULT_INDEX_BITS[kind] if value is None else value


def _weights_of(layer):
    """(kind, [(weight name, values, clusters or None)]) for a reportable layer, else None."""
    if isinstance(layer, ClusterWeights):
        clustered = layer.get_clustered_weights()
        return layer.kind, [(name, clustered[name], layer.number_of_clusters) for name in clustered]
    if layer_registry.is_pruning_wrapper(layer) or (isinstance(layer, keras.layers.Wrapper)
                                                    and not layer_registry.is_supported(layer)):
        # A pruning wrapper keeps its masked weights in the wrapped layer's variables.
        layer = getattr(layer, "layer", layer)
    for protocol in ("get_clusterable_weights", "get_prunable_weights"):
        if layer_registry.is_supported(layer, protocol) and layer.built:
            pairs = layer_registry.compressible_weights(layer, protocol)
            return (layer_registry.layer_kind(layer),
                    [(name, v.numpy(), None) for name, v in pairs])
    return None


def _iter_layers(model) -> Iterable:
    return layer_registry.walk(model)


def compression_report(model, index_bits: Union[int, Dict[str, int], None] = None) -> CompressionReport:
    """Expected per-layer and total storage of `model`'s compressible weights after pruning + quantization.

    Args:
      model: a `keras.Model` (clustered with `cluster_weights`, stripped, or plain), or a list of layers.
      index_bits: bits of the sparse relative indices, an int or {layer name: bits}; default the paper's
        per kind (`layer_registry.DEFAULT_INDEX_BITS`: 8 conv, 5 fully-connected).

    Returns:
      A `CompressionReport`: `print(report)` shows the paper's Table 2 columns for the P+Q stage,
      `report.to_json()` the same data; `report.rows` / `report.total` are `CompressionRow`s.
    """
    layers = list(_iter_layers(model)) if isinstance(model, keras.Model) else list(model)
    rows: List[CompressionRow] = []
    for layer in layers:
        found = _weights_of(layer)
        if found is None:
            continue
        kind, weights = found
        inner = layer.layer if isinstance(layer, keras.layers.Wrapper) else layer
        name = inner.name
        # The ops with block loops: DcFullyConnected, and DcConv2D (Conv1D runs as a CONV_2D too).
        blocks = kind == "fc" or isinstance(inner, (keras.layers.Conv1D, keras.layers.Conv2D))
        for weight_name, values, clusters in weights:
            row_name = name if len(weights) == 1 else f"{name}/{weight_name}"
            rows.append(estimate_row(row_name, kind, values, _index_bits_for(name, kind, index_bits), clusters,
                                     blocks=blocks))
    if not rows:
        raise ValueError(f"no compressible weights found in {getattr(model, 'name', model)!r}")
    return CompressionReport(rows)
