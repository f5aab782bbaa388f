"""``sparsity_report``: per-layer weight counts, nonzeros and sparsity of a pruned or stripped model."""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Tuple

import keras
import numpy as np

from dc_keras import layer_registry
from dc_keras.pruning.wrapper import PruneLowMagnitude, _iter_layers, read_value

__all__ = ["LayerSparsity", "SparsityReport", "sparsity_report"]


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
    """One compressible weight tensor: its layer, weight name, kind ("fc", "conv", "embedding", "custom"),
    shape, number of weights and number of nonzero weights."""

    layer: str
    weight: str
    kind: str
    shape: Tuple[int, ...]
    n_weights: int
    nonzeros: int

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights."""
        return 1.0 - self.density if self.n_weights else 0.0

    @property
    def density(self) -> float:
        """Fraction of nonzero weights (the paper's "weights%")."""
        return self.nonzeros / self.n_weights if self.n_weights else 0.0


class SparsityReport(list):
    """A list of :class:`LayerSparsity` rows with totals; ``str(report)`` is the table."""

    @property
    def n_weights(self) -> int:
        """Total number of compressible weights."""
        return sum(row.n_weights for row in self)

    @property
    def nonzeros(self) -> int:
        """Total number of nonzero compressible weights."""
        return sum(row.nonzeros for row in self)

    @property
    def sparsity(self) -> float:
        """Overall fraction of zero compressible weights."""
        return 1.0 - self.nonzeros / self.n_weights if self.n_weights else 0.0

    def row(self, layer: str) -> LayerSparsity:
        """The first row of the layer named ``layer`` (KeyError if none)."""
        for row in self:
            if row.layer == layer:
                return row
        raise KeyError(f"no layer {layer!r} in the report; layers are {[row.layer for row in self]}")

    def table(self) -> str:
        """The report as a fixed-width text table with a total line."""
        headers = ("layer", "weight", "kind", "shape", "#weights", "nonzeros", "weights%", "sparsity")
        lines = [(row.layer, row.weight, row.kind, "x".join(map(str, row.shape)), f"{row.n_weights:,}",
                  f"{row.nonzeros:,}", f"{100 * row.density:.2f}%", f"{100 * row.sparsity:.2f}%") for row in self]
        total = ("total", "", "", "", f"{self.n_weights:,}", f"{self.nonzeros:,}",
                 f"{100 * (1 - self.sparsity) if self.n_weights else 0:.2f}%", f"{100 * self.sparsity:.2f}%")
        widths = [max(len(str(cells[i])) for cells in [headers, total, *lines]) for i in range(len(headers))]
        right = {4, 5, 6, 7}

        def fmt(cells):
            return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([fmt(headers), rule, *map(fmt, lines), rule, fmt(total)])

    def __str__(self):
        return self.table()


def _rows_for(layer) -> List[LayerSparsity]:
    if isinstance(layer, PruneLowMagnitude):
        inner = layer.layer
        kind = layer_registry.layer_kind(inner)
        rows = []
        for weight, mask, _ in layer.pruning_vars:
            # The effective weights are weight * mask (the variable is zeroed after every optimizer step
            # anyway, but a user may have assigned it since).
            value = read_value(weight) * read_value(mask)
            rows.append(LayerSparsity(inner.name, weight.path.split("/")[-1], kind, tuple(value.shape),
                                      int(value.size), int(np.count_nonzero(value))))
        return rows
    if not layer.built or not layer_registry.is_supported(layer, "get_prunable_weights"):
        return []
    kind = layer_registry.layer_kind(layer)
    rows = []
    for name, weight in layer_registry.compressible_weights(layer, "get_prunable_weights"):
        value = read_value(weight)
        rows.append(LayerSparsity(layer.name, name, kind, tuple(value.shape), int(value.size),
                                  int(np.count_nonzero(value))))
    return rows


def sparsity_report(model, print_fn: Optional[Callable[[str], None]] = print) -> SparsityReport:
    """Per-layer sparsity of the compressible weights of ``model`` (wrapped or stripped; nested models are
    walked), printed as a table with ``print_fn`` (None: do not print) and returned as a
    :class:`SparsityReport` (a list of :class:`LayerSparsity`)."""
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"sparsity_report expects a keras Model or Layer, got {type(model).__name__}")
    report = SparsityReport()
    for layer in _iter_layers(model):
        if isinstance(layer, keras.Model):
            continue
        report.extend(_rows_for(layer))
    if print_fn is not None:
        print_fn(report.table())
    return report
