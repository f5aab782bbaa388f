"""Per-layer pruning sensitivity analysis and per-layer sparsity targets that meet an accuracy budget.

Han et al. (NIPS 2015, used by Deep Compression) choose each layer's pruning threshold from a
sensitivity curve: prune one layer at a time by weight magnitude, *without* retraining, and look at how
accuracy falls. Layers that tolerate more pruning (the large fully-connected ones) get higher targets
than sensitive ones (the first convolution). `sensitivity_analysis` measures those curves on a trained
Keras model and proposes targets:

1. per layer, the largest sparsity up to which every measured point stays within `budget` of the
   unpruned accuracy (a prefix rule, so one lucky noisy point past a bad one is not taken);
2. all proposals applied together, evaluated, and while the combined drop exceeds the budget, the layer
   whose own curve shows the largest drop at its current target steps back one sparsity level.

The model's weights are restored afterwards, whatever happens. Retraining (the pipeline's prune stage)
then usually recovers more than the budget, so the targets are conservative.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from dc_keras import layer_registry

DEFAULT_SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclasses.dataclass
class SensitivityResult:
    """What `sensitivity_analysis` measured and proposes.

    Attributes:
      baseline: metric of the unmodified model.
      budget: the largest allowed drop of the metric (absolute, e.g. 0.01 = one accuracy point).
      sparsities: the sparsity levels measured (ascending, 0 excluded).
      curves: layer name -> metric after pruning only that layer at each of `sparsities`.
      num_weights: layer name -> number of compressible weights.
      proposal: layer name -> proposed sparsity (0.0 when the layer cannot be pruned within budget).
      combined: metric with every proposal applied at once (after any back-off).
      backoff: the back-off steps taken, as (layer, from sparsity, to sparsity, combined metric before).
    """

    baseline: float
    budget: float
    sparsities: Tuple[float, ...]
    curves: Dict[str, List[float]]
    num_weights: Dict[str, int]
    proposal: Dict[str, float]
    combined: float
    backoff: List[Tuple[str, float, float, float]]

    @property
    def combined_drop(self) -> float:
        return self.baseline - self.combined

    @property
    def feasible(self) -> bool:
        """True when at least one layer gets a non-zero sparsity within the budget."""
        return any(s > 0 for s in self.proposal.values())

    @property
    def overall_sparsity(self) -> float:
        """Fraction of all compressible weights the proposal removes."""
        total = sum(self.num_weights.values())
        return sum(self.proposal[n] * self.num_weights[n] for n in self.proposal) / total if total else 0.0

    def to_dict(self) -> dict:
        """A JSON-serialisable form."""
        data = dataclasses.asdict(self)
        data["sparsities"] = list(self.sparsities)
        data["backoff"] = [list(step) for step in self.backoff]
        data["combined_drop"] = self.combined_drop
        data["overall_sparsity"] = self.overall_sparsity
        data["feasible"] = self.feasible
        return data

    def format_table(self) -> str:
        """A plain-text table: one row per layer, metric per sparsity, and the proposed target."""
        header = f"{'layer':<20}{'#weights':>10}" + "".join(f"{s:>8.0%}" for s in self.sparsities) + f"{'target':>9}"
        lines = [f"sensitivity (metric without retraining; baseline {self.baseline:.4f}, budget {self.budget:.4f})",
                 header]
        for name, curve in self.curves.items():
            lines.append(f"{name:<20}{self.num_weights[name]:>10}" + "".join(f"{v:>8.4f}" for v in curve)
                         + f"{self.proposal[name]:>9.0%}")
        for layer, old, new, metric in self.backoff:
            lines.append(f"back-off: {layer} {old:.0%} -> {new:.0%} (combined was {metric:.4f})")
        lines.append(f"all proposals together: {self.combined:.4f} (drop {self.combined_drop:.4f}), "
                     f"{self.overall_sparsity:.1%} of weights pruned")
        return "\n".join(lines)


def _leaf_layers(model) -> Iterable:
    """Layers of `model`, descending into nested models, in order."""
    return layer_registry.walk(model)


def _compressible_layers(model, layer_names: Optional[Sequence[str]]) -> Dict[str, list]:
    """layer name -> list of compressible variables, for the layers dc_keras supports."""
    found = {}
    for layer in _leaf_layers(model):
        if layer_registry.is_supported(layer) and layer.weights:
            found[layer.name] = [var for _, var in layer_registry.compressible_weights(layer)]
    if layer_names is not None:
        unknown = [n for n in layer_names if n not in found]
        if unknown:
            raise ValueError(f"layers {unknown} are not compressible layers of model {model.name!r}; "
                             f"compressible layers are {sorted(found)}")
        found = {n: found[n] for n in layer_names}
    if not found:
        raise ValueError(
            f"model {model.name!r} has no compressible layers (supported: Dense, Conv1D/2D, DepthwiseConv2D, "
            "Conv2DTranspose, Embedding, or layers implementing get_prunable_weights())")
    return found


def magnitude_prune(values: np.ndarray, sparsity: float) -> np.ndarray:
    """A copy of `values` with the round(sparsity * size) smallest-magnitude entries set to zero.

    Counting entries (rather than thresholding) hits the requested sparsity exactly even when many
    weights share a magnitude.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    flat = np.array(values, copy=True).reshape(-1)
    k = int(round(sparsity * flat.size))
    if k > 0:
        smallest = np.argpartition(np.abs(flat), k - 1)[:k]
        flat[smallest] = 0
    return flat.reshape(np.shape(values))


def top1_accuracy(model, x, y, batch_size: int = 256) -> float:
    """Top-1 accuracy of `model` on (x, y); y holds integer labels or one-hot rows."""
    predictions = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    labels = np.asarray(y)
    if labels.ndim == predictions.ndim and labels.ndim > 1 and labels.shape[-1] > 1:
        labels = labels.argmax(axis=-1)
    if predictions.shape[-1] == 1:
        raise ValueError("top-1 accuracy needs one output per class; pass evaluate_fn for other outputs")
    # (n,) and (n, 1) integer labels both compare against the (n,) argmax.
    return float(np.mean(predictions.argmax(axis=-1) == labels.reshape(predictions.shape[:-1])))


def _validate_sparsities(sparsities: Sequence[float]) -> Tuple[float, ...]:
    values = tuple(sorted({float(s) for s in sparsities}))
    if not values:
        raise ValueError("sparsities must not be empty")
    bad = [s for s in values if not 0.0 < s < 1.0]
    if bad:
        raise ValueError(f"sparsities must lie in (0, 1); got {bad}")
    return values


def _top1_on(data, batch_size: int) -> Callable[[object], float]:
    """The default metric: top-1 accuracy on `data` = (x, y); ValueError for data that is not such a pair."""
    if data is None or len(data) != 2:
        raise ValueError("data must be a pair (x, y) when evaluate_fn is not given")
    x, y = data
    if len(x) != len(y):
        raise ValueError(f"data: x has {len(x)} examples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError("data is empty")

    def evaluate(m):
        return top1_accuracy(m, x, y, batch_size=batch_size)

    return evaluate


class _Pruner:
    """Sets the analysed layers' weights to magnitude-pruned copies of their original values."""

    def __init__(self, targets: Dict[str, list]):
        self.targets = targets
        self.originals = {name: [np.array(v.numpy()) for v in variables] for name, variables in targets.items()}
        self.num_weights = {name: int(sum(o.size for o in arrays)) for name, arrays in self.originals.items()}

    def apply(self, assignment: Dict[str, float]) -> None:
        """Prune each layer to its sparsity in `assignment`; layers it does not name get their originals back."""
        for name, variables in self.targets.items():
            s = assignment.get(name, 0.0)
            for var, original in zip(variables, self.originals[name]):
                var.assign(magnitude_prune(original, s) if s > 0 else original)


def _measure_curves(model, pruner: _Pruner, levels, evaluate_fn, verbose: int) -> Dict[str, List[float]]:
    """layer name -> metric with that layer alone pruned to each level."""
    curves: Dict[str, List[float]] = {}
    for name in pruner.targets:
        curve = []
        for s in levels:
            pruner.apply({name: s})
            curve.append(float(evaluate_fn(model)))
        pruner.apply({})
        curves[name] = curve
        if verbose:
            print(f"sensitivity {name:<20} " + "  ".join(f"{s:.0%}:{v:.4f}" for s, v in zip(levels, curve)),
                  flush=True)
    return curves


def _largest_within_budget(curves, levels, baseline: float, budget: float) -> Dict[str, int]:
    """Per layer, the index of the largest level of the prefix of levels that all stay within budget (-1:
    none)."""
    index = {}
    for name, curve in curves.items():
        i = -1
        while i + 1 < len(levels) and baseline - curve[i + 1] <= budget:
            i += 1
        index[name] = i
    return index


def _proposal(levels, index: Dict[str, int]) -> Dict[str, float]:
    return {n: (levels[i] if i >= 0 else 0.0) for n, i in index.items()}


def _back_off(model, pruner: _Pruner, curves, levels, index: Dict[str, int], baseline: float, budget: float,
              evaluate_fn) -> tuple:
    """(combined metric, back-off steps): prunes all layers together at `index` and, while that misses the
    budget, lowers the level of the layer that hurts most on its own (updating `index`)."""
    backoff = []
    pruner.apply(_proposal(levels, index))
    combined = float(evaluate_fn(model))
    while baseline - combined > budget and any(i >= 0 for i in index.values()):
        def own_drop(n):
            return baseline - curves[n][index[n]]
        # Largest individual drop first; on ties the smaller layer, whose back-off costs less size.
        worst = max((n for n in index if index[n] >= 0), key=lambda n: (own_drop(n), -pruner.num_weights[n]))
        old = levels[index[worst]]
        index[worst] -= 1
        backoff.append((worst, old, levels[index[worst]] if index[worst] >= 0 else 0.0, combined))
        pruner.apply(_proposal(levels, index))
        combined = float(evaluate_fn(model))
    return combined, backoff


def sensitivity_analysis(model, data, sparsities: Sequence[float] = DEFAULT_SPARSITIES,
                         budget: float = 0.01, layers: Optional[Sequence[str]] = None,
                         evaluate_fn: Optional[Callable[[object], float]] = None,
                         batch_size: int = 256, verbose: int = 1) -> SensitivityResult:
    """Measure per-layer pruning sensitivity and propose per-layer sparsities meeting `budget`.

    Args:
      model: a trained Keras model (plain layers, not wrapped for pruning or clustering).
      data: (x, y) to evaluate on, ideally a validation split rather than the test set; y holds integer
        labels or one-hot rows. Ignored when `evaluate_fn` is given (pass None then).
      sparsities: sparsity levels to try per layer, each in (0, 1).
      budget: largest allowed drop of the metric, absolute (0.01 = one point of accuracy); >= 0.
      layers: names of the layers to analyse; default every compressible layer. Others stay dense.
      evaluate_fn: `evaluate_fn(model) -> float`, higher is better; default top-1 accuracy on `data`.
      batch_size: batch size of the default evaluation.
      verbose: 0 silent, 1 one line per layer.

    Returns:
      A SensitivityResult; `result.proposal` maps layer name -> sparsity to use as per-layer targets.
      The model's weights are unchanged on return.

    Raises:
      ValueError: bad arguments, or a model without compressible layers.
    """
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget >= 0):
        raise ValueError(f"budget must be a finite number >= 0 (an absolute metric drop), got {budget!r}")
    levels = _validate_sparsities(sparsities)
    if evaluate_fn is None:
        evaluate_fn = _top1_on(data, batch_size)
    pruner = _Pruner(_compressible_layers(model, layers))
    try:
        baseline = float(evaluate_fn(model))
        curves = _measure_curves(model, pruner, levels, evaluate_fn, verbose)
        index = _largest_within_budget(curves, levels, baseline, budget)
        combined, backoff = _back_off(model, pruner, curves, levels, index, baseline, budget, evaluate_fn)
    finally:
        pruner.apply({})

    result = SensitivityResult(baseline=baseline, budget=float(budget), sparsities=levels, curves=curves,
                               num_weights=pruner.num_weights, proposal=_proposal(levels, index), combined=combined,
                               backoff=backoff)
    if verbose:
        print(result.format_table(), flush=True)
    return result
