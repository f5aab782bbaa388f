"""Per-layer codebook bits chosen from measured accuracy and coded size instead of fixed presets.

The paper fixes 8 bits for conv and 5 for fully-connected layers; how few bits a layer really needs depends
on the layer (its Huffman-coded code stream shrinks by roughly nonzeros/8 bytes per bit saved). Given a
pruned model, `allocate_bits` clusters each layer's surviving weights at every candidate width (k-means,
linear init, no fine-tuning), measures the coded size of each (dc_keras.codec.encode) and then lowers bits
greedily: starting from every layer at its largest candidate, each round tries one step down for each
layer, on the model with every layer quantized at its current width, and takes the step that saves the
most bytes while the accuracy stays within `budget` of the unquantized pruned model. A layer whose next
step breaks the budget keeps its width. Fine-tuning the centroids afterwards (the pipeline's cluster stage)
usually wins back part of the loss, so the choice is conservative.

Used by the pipeline when CompressionConfig.bit_budget is set; the chosen widths replace config.bits.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from dc_keras import layer_registry, limits


@dataclasses.dataclass
class BitAllocation:
    """What `allocate_bits` measured and chose.

    Attributes:
      bits: layer name -> chosen codebook bits.
      baseline: accuracy of the pruned model before quantization.
      accuracy: accuracy with every layer quantized at its chosen bits (no fine-tuning).
      sizes: layer name -> {bits: coded blob bytes}.
      steps: the steps taken, as (layer, from bits, to bits, bytes saved, accuracy after).
    """

    bits: Dict[str, int]
    baseline: float
    accuracy: float
    sizes: Dict[str, Dict[int, int]]
    steps: List[Tuple[str, int, int, int, float]]

    def to_dict(self) -> dict:
        """JSON-serialisable form (report.json)."""
        return {"bits": dict(self.bits), "baseline": self.baseline, "accuracy": self.accuracy,
                "sizes": {n: {str(b): s for b, s in v.items()} for n, v in self.sizes.items()},
                "steps": [list(step) for step in self.steps]}


def classification_accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy of `model` on (x, y); y as class ids or one-hot rows."""
    predicted = np.argmax(np.asarray(model.predict(x, batch_size=batch_size, verbose=0)), axis=-1)
    labels = np.argmax(y, axis=-1) if np.ndim(y) == 2 else np.asarray(y).reshape(-1)
    return float(np.mean(predicted == labels))


def _quantized(kernel: np.ndarray, bits: int, seed: int) -> np.ndarray:
    from dc_keras.clustering.kmeans import cluster_array, clustered_values

    nonzeros = int(np.count_nonzero(kernel))
    clusters = min(1 << bits, nonzeros)
    if clusters < 1:
        return kernel.copy()
    centroids, indices = cluster_array(kernel, clusters, init="linear", preserve_sparsity=True, seed=seed)
    return clustered_values(centroids, indices).reshape(kernel.shape)


def allocate_bits(model, validation_data, budget: float, candidates: Mapping[str, Sequence[int]],
                  seed: int = 0, evaluate: Optional[Callable] = None, verbose: int = 0) -> BitAllocation:
    """Per-layer codebook bits for the pruned `model` (not modified): the smallest coded size whose
    quantized accuracy on `validation_data` stays within `budget` (absolute) of the pruned model's.

    Args:
      model: a pruned, stripped Keras model.
      validation_data: (x, y) to measure accuracy on (never the test set).
      budget: largest allowed accuracy drop, e.g. 0.005.
      candidates: layer name -> candidate bits (each in limits' range); layers not named keep their
        weights unquantized here and are not part of the choice.
      evaluate: accuracy function (model, x, y) -> float; default classification_accuracy.
    """
    from dc_keras import codec
    from dc_keras.pipeline.keras_tools import compressible_layers, copy_model

    if not 0 <= budget < 1:
        raise ValueError(f"bit allocation budget must be in [0, 1), got {budget!r}")
    evaluate = evaluate or classification_accuracy
    x, y = validation_data
    work = copy_model(model)
    layers = {layer.name: layer for layer in compressible_layers(work)}
    unknown = sorted(set(candidates) - set(layers))
    if unknown:
        raise ValueError(f"bit allocation: no compressible layer named {unknown}; known: {sorted(layers)}")
    variables = {name: layer_registry.compressible_weights(layers[name])[0][1] for name in candidates}
    originals = {name: np.asarray(v.numpy(), dtype=np.float32) for name, v in variables.items()}
    options: Dict[str, List[int]] = {}
    for name, widths in candidates.items():
        widths = sorted({limits.check_bits(int(b), f"candidate bits of {name!r}") for b in widths})
        if not widths:
            raise ValueError(f"bit allocation: layer {name!r} has no candidate bits")
        options[name] = widths

    quantized = {name: {b: _quantized(originals[name], b, seed) for b in widths} for name, widths in options.items()}
    sizes = {name: {b: len(codec.encode(q, bits=b, index_bits=5, coder="huffman", layout="sparse"))
                    for b, q in by_bits.items()} for name, by_bits in quantized.items()}
    baseline = evaluate(work, x, y)
    chosen = {name: widths[-1] for name, widths in options.items()}

    def accuracy_with(bits: Dict[str, int]) -> float:
        for name, b in bits.items():
            variables[name].assign(quantized[name][b])
        return evaluate(work, x, y)

    current = accuracy_with(chosen)
    steps = []
    frozen = set()
    while True:
        best = None
        for name in options:
            lower = [b for b in options[name] if b < chosen[name]]
            if name in frozen or not lower:
                continue
            trial = dict(chosen, **{name: lower[-1]})
            saved = sizes[name][chosen[name]] - sizes[name][lower[-1]]
            accuracy = accuracy_with(trial)
            if baseline - accuracy > budget:
                frozen.add(name)
                continue
            if best is None or (saved, accuracy) > (best[3], best[4]):
                best = (name, chosen[name], lower[-1], saved, accuracy)
        if best is None:
            break
        steps.append(best)
        chosen[best[0]] = best[2]
        current = best[4]
        if verbose:
            print(f"bit allocation: {best[0]} {best[1]} -> {best[2]} bits saves {best[3]} B, "
                  f"accuracy {best[4]:.4f} (pruned {baseline:.4f})", flush=True)
    return BitAllocation(bits=chosen, baseline=baseline, accuracy=current, sizes=sizes, steps=steps)


def candidate_bits(names: Sequence[str], upper: Mapping[str, int], span: int = 3) -> Dict[str, List[int]]:
    """layer name -> the widths from upper - span (at least limits.MIN_BITS, and 2) up to `upper`."""
    floor = max(2, limits.MIN_BITS)
    return {name: list(range(max(floor, int(upper[name]) - span), int(upper[name]) + 1)) for name in names}


def selection_data(data, config, share: float = 0.1):
    """(x, y) to choose bits on, never the test set: the validation split when the config holds one out,
    else the last `share` of the training data (seen in training, so it shows the quantization's damage
    rather than generalisation)."""
    from dc_keras.pipeline import stages

    if config.validation_fraction > 0:
        return stages.validation_split(data, config)
    (x, y), _ = stages.require_data(data, "bit allocation")
    tail = max(1, int(len(x) * share))
    return x[len(x) - tail:], y[len(y) - tail:]
