"""CompressionConfig: everything a compression run depends on besides the model and the data."""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from typing import Any, Callable, Dict, Tuple, Union

from dc_keras import limits
from dc_keras.atomic import atomic_write
from dc_keras.per_layer import check_per_layer, resolve_per_layer

PerLayer = Union[None, float, int, Dict[str, Any]]
BlockSize = Union[None, Tuple[int, int], Dict[str, Tuple[int, int]]]


# --------------------------------------------------------------------------------------------------
# Configuration

@dataclasses.dataclass
class CompressionConfig:
    """Everything a compression run depends on besides the model and the data.

    Per-layer fields take one value for every compressible layer, or a dict {layer name: value}; a layer
    missing from a sparsity/quality dict stays dense, a layer missing from a bits dict gets the paper's
    default (8 bits for conv layers, 5 for fully-connected ones, `dc_keras.layer_registry`).

    Attributes:
      sparsity: target fraction of pruned weights per layer, in [0, 1). Exclusive with `quality`.
      quality: the paper's rule instead: prune |w| < quality * std(w) per layer (> 0).
      block_size: block-structured pruning: None or (1, 1) prunes single weights; a pair (r, c) prunes whole
        blocks of r consecutive inputs by c consecutive outputs of every Dense kernel but the model's last
        compressible layer (the classifier stays unstructured; conv layers too: a layer of either gets
        blocks only when a dict names it; conv blocks span (in_channels, out_channels) at each tap); a dict
        {layer name: (r, c)} sets the layers it names, others stay unstructured. Lists are accepted for
        pairs (JSON) and stored as tuples.
      bits: codebook index bits per layer (2**bits shared values), 1..8; None = paper defaults; a layer given
        0 in a dict is not clustered (and so stays a stock op).
      index_bits: bits of the relative sparse indices per layer, 2..8; None = paper defaults.
      epochs: the dense model's own training epochs (0 when a trained model is given). Dense training may
        run up to epochs + prune_epochs + cluster_epochs (the compressed model's total, so the baseline
        gets at least the training the compressed model got) and stops early `patience` epochs after
        its validation accuracy last improved, keeping its best validated epoch.
      prune_epochs: retraining epochs summed over all pruning iterations.
      prune_iterations: pruning steps; the target is reached along a cubic ramp (bigger steps first,
        as in tfmot's PolynomialDecay) with retraining after each step.
      cluster_epochs: centroid fine-tuning epochs.
      batch_size: training batch size of every stage.
      learning_rate, prune_learning_rate, cluster_learning_rate: Adam learning rates of each stage
        (retraining uses lower rates: the paper retrains pruned nets at 1/10 to 1/100 of the original).
      centroid_init: "linear" (the paper's best), "density", "random" or "kmeans++".
      validation_fraction: share of the training data held out (after a seeded shuffle) to select every
        stage's model (best validated epoch) and for sensitivity analysis; 0 trains on all of it and keeps
        each stage's last epoch.
      patience: dense training stops after this many epochs without a better validation accuracy.
      distill_weight: weight of knowledge distillation from the dense model during pruning retraining and
        centroid fine-tuning, in [0, 1]: loss = (1 - w) * CE + w * T^2 * KL(teacher_T || student_T); 0 off.
      distill_temperature: the distillation temperature T (> 0).
      max_drop: largest allowed test-accuracy drop of the compressed model below the validated dense model,
        in percentage points; report.json says whether it was met.
      bit_budget: if set, per-layer codebook bits are chosen after pruning by dc_keras.bit_allocation: each
        layer's `bits` (or the paper's default) is the largest candidate, down to 3 fewer, and the widths
        with the smallest coded size whose accuracy (before fine-tuning, on the validation split or else
        the training tail) stays within this absolute drop of the pruned model's are kept.
      seed: random seed of weight initialisation, shuffling and k-means.
      regrowth: pruning with regrowth (Dynamic Network Surgery / Dynamic Pruning with Feedback): every pruning
        iteration but the last keeps the pruned weights dense, trains them through the masked forward pass
        (straight-through gradient) and recomputes the masks from the dense magnitudes every few steps, so a
        weight pruned too early can come back; the last iteration computes its mask once from those dense
        values and fine-tunes it fixed. With prune_iterations 1 the first half of its epochs regrow (so
        prune_epochs must then be at least 2).
      bias_dtype: how compressed.tflite stores the dc ops' biases: "float16" (half the bytes, ~5e-4 relative
        rounding) or "float32" (exact); export_tflite's bias_dtype.
    """

    sparsity: PerLayer = 0.9
    quality: PerLayer = None
    block_size: BlockSize = None
    bits: PerLayer = None
    index_bits: PerLayer = None
    epochs: int = 10
    prune_epochs: int = 6
    prune_iterations: int = 3
    cluster_epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-3
    prune_learning_rate: float = 5e-4
    cluster_learning_rate: float = 1e-4
    centroid_init: str = "linear"
    validation_fraction: float = 0.1
    patience: int = 5
    distill_weight: float = 0.0
    distill_temperature: float = 4.0
    max_drop: float = 0.5
    seed: int = 0
    bit_budget: Any = None
    regrowth: bool = False
    bias_dtype: str = "float16"

    def __post_init__(self):
        self.block_size = _normalised_block_size(self.block_size)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        if self.sparsity is not None and self.quality is not None:
            raise ValueError("CompressionConfig: give sparsity or quality, not both (set the other to None)")
        if self.sparsity is None and self.quality is None:
            raise ValueError("CompressionConfig: one of sparsity or quality is required")
        _check_per_layer("sparsity", self.sparsity, lambda v: _is_real(v) and 0.0 <= v < 1.0, "in [0, 1)")
        _check_per_layer("quality", self.quality, lambda v: _is_real(v) and math.isfinite(v) and v > 0,
                         "a finite number > 0")
        _check_block_size(self.block_size)
        if _is_int(self.bits) and self.bits == 0:
            raise ValueError("CompressionConfig: bits must be " + limits.BITS_RANGE + ", got 0 (0 for every "
                             "layer would compress nothing; {layer: 0} leaves single layers unclustered)")
        if isinstance(self.bits, dict):
            _check_per_layer("bits", self.bits, lambda v: (_is_int(v) and v == 0) or limits.bits_ok(v),
                             "0 (not clustered) or " + limits.BITS_RANGE)
        else:
            _check_per_layer("bits", self.bits, limits.bits_ok, limits.BITS_RANGE)
        _check_per_layer("index_bits", self.index_bits, limits.index_bits_ok, limits.INDEX_BITS_RANGE)
        for name in ("epochs", "prune_epochs", "cluster_epochs"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"CompressionConfig: {name} must be an integer >= 0, got {getattr(self, name)!r}")
        for name in ("prune_iterations", "batch_size"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"CompressionConfig: {name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.prune_epochs and self.prune_epochs < self.prune_iterations:
            raise ValueError(f"CompressionConfig: prune_epochs ({self.prune_epochs}) must be 0 or at least "
                             f"prune_iterations ({self.prune_iterations}): each iteration retrains")
        for name in ("learning_rate", "prune_learning_rate", "cluster_learning_rate"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"CompressionConfig: {name} must be a number > 0, got {value!r}")
        if self.centroid_init not in ("linear", "density", "random", "kmeans++"):
            raise ValueError(f"CompressionConfig: centroid_init must be linear, density, random or kmeans++, "
                             f"got {self.centroid_init!r}")
        if not _is_real(self.validation_fraction) or not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"CompressionConfig: validation_fraction must be in [0, 1), "
                             f"got {self.validation_fraction!r}")
        if not _is_int(self.patience) or self.patience < 1:
            raise ValueError(f"CompressionConfig: patience must be an integer >= 1, got {self.patience!r}")
        if not _is_real(self.distill_weight) or not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"CompressionConfig: distill_weight must be in [0, 1], got {self.distill_weight!r}")
        if not _is_real(self.distill_temperature) or not math.isfinite(self.distill_temperature) \
                or self.distill_temperature <= 0:
            raise ValueError(f"CompressionConfig: distill_temperature must be a number > 0, "
                             f"got {self.distill_temperature!r}")
        if not _is_real(self.max_drop) or not math.isfinite(self.max_drop):
            raise ValueError(f"CompressionConfig: max_drop must be a finite number (percentage points), "
                             f"got {self.max_drop!r}")
        if self.bit_budget is not None and (not _is_real(self.bit_budget) or not 0.0 <= self.bit_budget < 1.0):
            raise ValueError(f"CompressionConfig: bit_budget must be None or in [0, 1), got {self.bit_budget!r}")
        if self.bias_dtype not in ("float16", "float32"):
            raise ValueError(f"CompressionConfig: bias_dtype must be float16 or float32, got {self.bias_dtype!r}")
        if not _is_int(self.seed):
            raise ValueError(f"CompressionConfig: seed must be an integer, got {self.seed!r}")
        if not isinstance(self.regrowth, bool):
            raise ValueError(f"CompressionConfig: regrowth must be true or false, got {self.regrowth!r}")
        if self.regrowth and not self.prune_epochs:
            raise ValueError("CompressionConfig: regrowth needs retraining: prune_epochs must be > 0 "
                             "(with 0 the model is pruned once, without training)")
        if self.regrowth and self.prune_iterations == 1 and self.prune_epochs < 2:
            raise ValueError(f"CompressionConfig: regrowth with prune_iterations 1 regrows during the first half "
                             f"of the retraining and fine-tunes a fixed mask in the second: prune_epochs must be "
                             f">= 2, got {self.prune_epochs}")

    def to_json(self) -> str:
        """The config as a JSON object (indented, keys in field order)."""
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "CompressionConfig":
        """Parse `to_json` output; unknown keys raise ValueError (a typo must not pass silently)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"CompressionConfig: not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"CompressionConfig: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"CompressionConfig: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)

    def save(self, path: str) -> None:
        """Write `to_json()` to `path` atomically (creating its directory if needed)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write(path, (self.to_json() + "\n").encode())

    @classmethod
    def load(cls, path: str) -> "CompressionConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())

    def replace(self, **changes) -> "CompressionConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_per_layer(name: str, value, ok: Callable[[Any], bool], what: str) -> None:
    check_per_layer("CompressionConfig", name, value, ok, what)


def _normalised_block_size(value):
    # JSON gives lists; tuples keep a loaded config equal to the one saved.
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return {name: tuple(size) if isinstance(size, list) else size for name, size in value.items()}
    return value


def _check_block_size(value) -> None:
    from dc_keras.pruning.blocks import check_block_size

    if value is None:
        return
    try:
        if isinstance(value, dict):
            for name, size in value.items():
                if not isinstance(name, str):
                    raise ValueError(f"block_size keys must be layer names, got {name!r}")
                check_block_size(size, f"block_size[{name!r}]")
        else:
            check_block_size(value)
    except ValueError as error:
        raise ValueError(f"CompressionConfig: {error}") from None


def block_sizes(config: "CompressionConfig", layers) -> Dict[str, Tuple[int, int]]:
    """layer name -> block size for the pruning stage: a dict's entries as given; a single pair for the
    Dense layers among `layers` (the model's compressible layers, in order) except the last one, the
    classifier. Conv kernels get blocks only when named. The classifier is small, so blocks gain little
    there, and whole blocks of it can take every weight of a class: with LeNet-300-100's 100x10 output
    layer at 75% in 16x1 blocks, two Fashion-MNIST classes lost all their weights (docs/pruning.md)."""
    import keras

    if config.block_size is None:
        return {}
    if isinstance(config.block_size, dict):
        return dict(config.block_size)
    return {layer.name: config.block_size for layer in layers[:-1] if isinstance(layer, keras.layers.Dense)}


def per_layer_value(value: PerLayer, layer_name: str, missing=None):
    """The value of a per-layer config field for one layer: the scalar, the dict entry, or `missing`."""
    return resolve_per_layer(value, layer_name, default=missing)


def dense_epoch_budget(config: CompressionConfig) -> int:
    """The most epochs dense training may run: its own plus every retraining epoch the compressed model
    gets, so that the baseline never had less training than what it is compared with."""
    return config.epochs + config.prune_epochs + config.cluster_epochs if config.epochs else 0


def dense_learning_phases(config: CompressionConfig):
    """[(epochs, learning_rate), ...] of dense training: the learning rates the compressed model trains
    with, stage by stage, so that the baseline also gets the lower-rate epochs that fine-tune it."""
    return [(config.epochs, config.learning_rate), (config.prune_epochs, config.prune_learning_rate),
            (config.cluster_epochs, config.cluster_learning_rate)]


def ramp(iteration: int, iterations: int) -> float:
    """Fraction of the final target reached after `iteration` of `iterations` steps (cubic, as tfmot)."""
    return 1.0 - (1.0 - iteration / iterations) ** 3


