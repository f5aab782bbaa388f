"""The pipeline's stages as functions: each takes its input model, the data and the config explicitly and
returns what it produced, leaving its input untouched. `DeepCompression` (dc_keras.pipeline) adds stage
headers, timing, accuracy records and the result directory around them.

`data` is ((x_train, y_train), (x_test, y_test)) as accepted by `validate_data`, or None for stages that
need none.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional

import numpy as np

from dc_keras import interrupts
from dc_keras.atomic import atomic_write
from dc_keras.pipeline.config import (CompressionConfig, block_sizes, dense_epoch_budget, dense_learning_phases,
                                     per_layer_value, ramp)
from dc_keras.pipeline.keras_tools import (compressible_layers, copy_model, kernel_arrays, tflite_accuracy,
                                           tflite_from_keras)
from dc_keras.pipeline.training import (DataSplits, TeacherTargets, accuracy_on, fit, split_data,
                                        teacher_targets)
from dc_keras.validation import check_layer_names

# The largest drop (absolute) of compressed.tflite's accuracy below its Keras model that verification accepts.
VERIFY_TOLERANCE = 0.005

# Training steps between mask updates in a regrowth iteration, as in Dynamic Pruning with Feedback (Lin et
# al. 2020): frequent enough that a weight regrown past the threshold rejoins within a fraction of an epoch
# and that the masked-out weights' straight-through updates stay small between updates, rare enough that
# the mask is not reshuffled by every minibatch's noise (and the top-k ranking costs little).
REGROWTH_UPDATE_STEPS = 16


def require_data(data, stage: str):
    """`data`, or ValueError saying that `stage` needs it."""
    if data is None:
        raise ValueError(f"{stage} needs data: DeepCompression(config, data=((x_train, y_train), "
                         "(x_test, y_test)))")
    return data


def splits(data, config: CompressionConfig) -> DataSplits:
    """`data` as DataSplits (fit, validation, test); DataSplits pass through unchanged."""
    return split_data(require_data(data, "training") if not isinstance(data, DataSplits) else data, config)


def fit_split(data, config: CompressionConfig):
    """Training examples, minus the validation share (drawn after a seeded shuffle)."""
    return splits(data, config).fit


def validation_split(data, config: CompressionConfig):
    """The held-out validation examples (None when validation_fraction is 0)."""
    return splits(data, config).validation


def evaluate(model, data, config: CompressionConfig) -> float:
    """Test-set accuracy of `model`."""
    return accuracy_on(model, splits(data, config).test, config)


def validation_accuracy(model, data, config: CompressionConfig) -> Optional[float]:
    """Validation-split accuracy of `model` (None when validation_fraction is 0)."""
    return accuracy_on(model, splits(data, config).validation, config)


def train_dense(model, data, config: CompressionConfig, epochs: Optional[int] = None, verbose: int = 0):
    """(trained copy of `model`, fit summary, pruning start): up to `epochs` (default dense_epoch_budget(config))
    through the stages' learning rates in turn (dense_learning_phases: a rate is left after its stage's
    epochs or config.patience epochs without validated improvement, resuming from the best weights),
    keeping the best validated epoch; seeded by config.seed.

    The pruning start is a copy of the model as the first rate left it (its best validated epoch of up to
    config.epochs at config.learning_rate): the compressed model's own lower-rate epochs come from pruning
    and fine-tuning, so both paths get the same training budget. It is the trained copy itself when training
    never went past the first rate. The summary gains "prune_start_epoch" (None in that case).
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    trained = copy_model(model)
    epochs = dense_epoch_budget(config) if epochs is None else epochs
    first_phase = {}
    summary = fit(trained, data, config, epochs, config.learning_rate, verbose=verbose, patience=config.patience,
                  phases=dense_learning_phases(config),
                  on_first_phase_end=lambda epoch, weights: first_phase.update(epoch=epoch, weights=weights))
    start = trained
    if first_phase:
        start = copy_model(trained)
        for variable, value in zip(start.weights, first_phase["weights"]):
            variable.assign(value)
    return trained, {**summary, "prune_start_epoch": first_phase.get("epoch")}, start


def distillation_targets(teacher, data, config: CompressionConfig, verbose: int = 0) -> Optional[TeacherTargets]:
    """The teacher's targets for one stage, or None when distillation is off or there is no teacher."""
    if teacher is None or not config.distill_weight:
        return None
    targets = teacher_targets(teacher, splits(data, config))
    if verbose:
        print(f"distillation: teacher log-probabilities of {len(targets.fit)} examples in {targets.seconds:.1f} s "
              f"(T {config.distill_temperature:g}, weight {config.distill_weight:g})", flush=True)
    return targets


def sensitivity(model, validation_data, budget: float, sparsities=None, verbose: int = 0):
    """`sensitivity_analysis` of a copy of `model` on `validation_data` with accuracy budget `budget`."""
    from dc_keras.sensitivity import DEFAULT_SPARSITIES, sensitivity_analysis

    return sensitivity_analysis(copy_model(model), validation_data, sparsities=sparsities or DEFAULT_SPARSITIES,
                                budget=budget, verbose=verbose, batch_size=1000)


def check_budget_met(result, budget: float) -> None:
    """ValueError when no layer can be pruned within `budget` (the budget is unmeetable)."""
    if not result.feasible:
        worst = {n: round(result.baseline - c[0], 4) for n, c in result.curves.items()}
        raise ValueError(
            f"accuracy budget {budget} cannot be met: pruning any layer to {min(result.sparsities):.0%} "
            f"already costs more (drops per layer: {worst}); raise --budget")


def _schedule(config: CompressionConfig, layer_name: str, fraction: float, regrowth: bool = False):
    """The pruning schedule of one layer at `fraction` of its target (None: the layer stays dense). The
    mask is computed at the first training step the wrappers see. Without `regrowth` it is then held while
    the survivors retrain (prune, retrain, prune more: the paper's iterative pruning; a huge frequency means
    "never again"); with it, it is recomputed every REGROWTH_UPDATE_STEPS steps from the dense weights."""
    from dc_keras.pruning.schedule import ConstantSparsity, SensitivityThreshold

    first, frequency = 1, REGROWTH_UPDATE_STEPS if regrowth else 10 ** 9
    if config.quality is not None:
        q = per_layer_value(config.quality, layer_name)
        return SensitivityThreshold(q * fraction, first, -1, frequency) if q else None
    s = per_layer_value(config.sparsity, layer_name, 0.0)
    return ConstantSparsity(s * fraction, first, -1, frequency) if s > 0 else None


def prune_schedules(model, config: CompressionConfig, iteration: int, regrowth: bool = False) -> Dict[str, Any]:
    """layer name -> schedule for one pruning iteration: the target scaled by the cubic ramp, masks held
    (or, with `regrowth`, recomputed every REGROWTH_UPDATE_STEPS steps)."""
    fraction = ramp(iteration, config.prune_iterations)
    return {layer.name: _schedule(config, layer.name, fraction, regrowth)
            for layer in compressible_layers(model)}


class PruneRound(NamedTuple):
    """One retraining of the pruning stage: its iteration (1-based), epochs, and whether it regrows."""

    iteration: int
    epochs: int
    regrowth: bool


def prune_rounds(config: CompressionConfig) -> List[PruneRound]:
    """The pruning stage's retrainings: one per iteration, prune_epochs spread over them (the first ones get
    the remainder). With config.regrowth every iteration but the last regrows, so that the last fine-tunes
    one fixed mask (its best-validated-epoch selection then compares models of one mask); a single iteration
    is split into a regrowing first half and a fixed second half."""
    base, extra = divmod(config.prune_epochs, config.prune_iterations)
    rounds = [PruneRound(i, base + (1 if i <= extra else 0), config.regrowth and i < config.prune_iterations)
              for i in range(1, config.prune_iterations + 1)]
    if config.regrowth and config.prune_iterations == 1:
        half = rounds[0].epochs // 2
        rounds = [PruneRound(1, half, True), PruneRound(1, rounds[0].epochs - half, False)]
    return rounds


def prune_once(model, config: CompressionConfig):
    """Prunes `model` in place to the final targets without retraining (prune_epochs == 0): the quality rule
    through the same schedule the pruning wrappers use, a sparsity as magnitude pruning."""
    from dc_keras import layer_registry
    from dc_keras.pruning.blocks import UNSTRUCTURED, BlockLayout
    from dc_keras.sensitivity import magnitude_prune

    layers = compressible_layers(model)
    blocks = block_sizes(config, layers)
    for layer in layers:
        schedule = _schedule(config, layer.name, 1.0)
        if schedule is None:
            continue
        for name, variable in layer_registry.compressible_weights(layer):
            values = np.asarray(variable.numpy())
            if blocks.get(layer.name, UNSTRUCTURED) != UNSTRUCTURED:
                layout = BlockLayout(values.shape, blocks[layer.name], name=f"layer {layer.name!r}, weight {name!r}")
                _, mask = schedule.compute_block_mask(0, values, layout)
                variable.assign(np.where(np.asarray(mask) != 0, values, 0).astype(values.dtype))
            elif config.quality is not None:
                _, mask = schedule.compute_mask(0, values)
                variable.assign(np.where(np.asarray(mask) != 0, values, 0).astype(values.dtype))
            else:
                variable.assign(magnitude_prune(values, schedule.target_sparsity))
    return model


def describe(schedule) -> str:
    """A schedule's target for progress lines."""
    if schedule is None:
        return "dense"
    if hasattr(schedule, "quality"):
        return f"quality {schedule.quality:.3g}"
    return f"{schedule.target_sparsity:.1%}" if hasattr(schedule, "target_sparsity") else repr(schedule)


def prune(model, data, config: CompressionConfig, verbose: int = 0, teacher=None):
    """Iterative magnitude pruning with retraining; returns (stripped pruned copy of `model`, fit summaries,
    one per retraining round of `prune_rounds`).

    Each iteration keeps its best validated epoch: its epochs all share one mask (regrowth rounds: one
    sparsity), so they compare models of equal sparsity. With config.regrowth the regrowth rounds hand their
    dense weights (pruned positions included) to the next round, whose first mask ranks them at its higher
    target. With `teacher` and config.distill_weight > 0, retraining distils from `teacher`.
    """
    import dc_keras
    from dc_keras.callbacks import UpdatePruningStep
    from dc_keras.pruning.strip import unwrap_dense

    check_layer_names(model, config, ("sparsity", "quality", "block_size"))
    current = copy_model(model)
    blocks = block_sizes(config, compressible_layers(current))
    if not config.prune_epochs:
        return prune_once(current, config), []
    distill = distillation_targets(teacher, data, config, verbose)
    summaries = []
    for iteration, epochs, regrowth in prune_rounds(config):
        schedules = prune_schedules(current, config, iteration, regrowth)
        if not any(schedules.values()):
            break
        if verbose:
            targets = ", ".join(f"{n} {describe(s)}" for n, s in schedules.items())
            masks = f", regrowth: masks every {REGROWTH_UPDATE_STEPS} steps" if regrowth else ""
            print(f"pruning iteration {iteration}/{config.prune_iterations} ({epochs} epochs{masks}): {targets}",
                  flush=True)
        wrapped = dc_keras.prune_low_magnitude(current, per_layer=schedules, block_size=blocks, regrowth=regrowth)
        summaries.append(fit(wrapped, data, config, epochs, config.prune_learning_rate,
                             callbacks=[UpdatePruningStep()], verbose=verbose, teacher=distill))
        current = unwrap_dense(wrapped) if regrowth else dc_keras.strip_pruning(wrapped)
    return current, summaries


def cluster(model, data, config: CompressionConfig, verbose: int = 0, teacher=None):
    """Weight sharing with centroid fine-tuning, zeros preserved, keeping the best validated epoch (and
    distilling from `teacher` when config.distill_weight > 0); returns (stripped clustered copy of `model`,
    fit summary), or (None, None) when bits == 0 for every layer (nothing to cluster)."""
    import dc_keras

    check_layer_names(model, config, ("bits",))
    names = [layer.name for layer in compressible_layers(model)]
    bits = {n: per_layer_value(config.bits, n) for n in names}
    skip = [n for n, b in bits.items() if b == 0]
    chosen = {n: b for n, b in bits.items() if b not in (None, 0)}
    if len(skip) == len(names):
        return None, None
    source = copy_model(model)
    keras_bits = chosen if chosen else None
    if skip:
        # Leave the skipped layers as they are: clustering layer by layer lets us pass over them.
        clustered = _cluster_some(source, [n for n in names if n not in skip], keras_bits, config)
    else:
        clustered = dc_keras.cluster_weights(source, bits=keras_bits, cluster_centroids_init=config.centroid_init,
                                             preserve_sparsity=True, seed=config.seed)
    targets = distillation_targets(teacher, data, config, verbose) if config.cluster_epochs else None
    summary = fit(clustered, data, config, config.cluster_epochs, config.cluster_learning_rate, verbose=verbose,
                  teacher=targets)
    return dc_keras.strip_clustering(clustered), summary


def _cluster_some(model, names, bits, config: CompressionConfig):
    """cluster_weights on a subset of layers (the others kept as they are), via clone_model."""
    import keras

    import dc_keras

    def clone(layer):
        if layer.name in names:
            wanted = None if bits is None else {layer.name: bits[layer.name]} if layer.name in bits else None
            return dc_keras.cluster_weights(layer, bits=wanted, cluster_centroids_init=config.centroid_init,
                                            preserve_sparsity=True, seed=config.seed)
        return layer

    return keras.models.clone_model(model, clone_function=clone)


def export(model, dense_model, output_dir: str, config: CompressionConfig, verify: bool = True):
    """(export report, {file name: path}): compressed.tflite from `model` (dc_keras.export_tflite) and, when
    `dense_model` is given, the stock baselines dense.tflite (float32) and dense_int8.tflite (dynamic-range
    int8, what dc-benchmark compares against), each written under a temporary name and renamed."""
    import dc_keras

    os.makedirs(output_dir, exist_ok=True)
    files = {"compressed.tflite": os.path.join(output_dir, "compressed.tflite")}
    # bits=None: the exporter stores each layer with the fewest index bits that hold its shared values,
    # which is never more than the clustering bits. The exporter writes atomically itself.
    # index_bits None: per layer the width whose coded index stream is smallest.
    index_bits = config.index_bits if config.index_bits is not None else "auto"
    report = dc_keras.export_tflite(model, files["compressed.tflite"], index_bits=index_bits, verify=verify,
                                    bias_dtype=config.bias_dtype)
    interrupts.check()
    if dense_model is not None:
        for name, int8 in (("dense.tflite", False), ("dense_int8.tflite", True)):
            path = os.path.join(output_dir, name)
            atomic_write(path, tflite_from_keras(dense_model, scratch_dir=output_dir, int8=int8))
            files[name] = path
            interrupts.check()
    return report, files


def verify(files: Mapping[str, str], data, keras_accuracy: Mapping[str, Optional[float]],
           verbose: int = 0) -> Dict[str, Any]:
    """{file name: {accuracy, keras_accuracy, bytes}}: test accuracy of each .tflite beside its Keras model's
    (`keras_accuracy` gives "compressed.tflite"'s and the dense files' by file name). compressed.tflite runs
    with dc_keras's delegate; RuntimeError when it falls more than VERIFY_TOLERANCE below its Keras model."""
    x_test, y_test = data.test if isinstance(data, DataSplits) else require_data(data, "verify")[1]
    results = {}
    for name, path in files.items():
        accuracy = tflite_accuracy(path, x_test, y_test, with_dc_delegate=(name == "compressed.tflite"))
        reference = keras_accuracy.get(name)
        results[name] = {"accuracy": accuracy, "keras_accuracy": reference, "bytes": os.path.getsize(path)}
        if verbose:
            shown = f"{reference:.4f}" if reference is not None else "n/a"
            print(f"{name}: .tflite accuracy {accuracy:.4f} (Keras {shown})", flush=True)
        if name == "compressed.tflite" and reference is not None and accuracy < reference - VERIFY_TOLERANCE:
            raise RuntimeError(f"verification failed: {name} reaches {accuracy:.4f} but its Keras model "
                               f"{reference:.4f}")
    return results


def sparsity_by_layer(model) -> Dict[str, float]:
    """layer name -> fraction of zero kernel weights."""
    return {n: float(np.mean(k == 0)) for n, k in kernel_arrays(model).items()}


def distinct_values_by_layer(model) -> Dict[str, int]:
    """layer name -> number of distinct nonzero kernel values."""
    return {n: int(np.unique(k[k != 0]).size) for n, k in kernel_arrays(model).items()}
