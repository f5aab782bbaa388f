"""The whole Deep Compression pipeline, one stage at a time or end to end.

    dense training (or a given trained model)
    -> iterative pruning with retraining            (dc_keras.prune_low_magnitude, strip_pruning)
    -> weight sharing with centroid fine-tuning     (dc_keras.cluster_weights, strip_clustering)
    -> export with relative indices + Huffman       (dc_keras.export_tflite)
    -> verification (the .tflite files against the Keras models, on the test set)
    -> report (the paper's Table 2 columns per layer and in total, plus file sizes and accuracies)

`DeepCompression(config)` holds one small `CompressionConfig` and the models each stage produced, so
`run()` does everything and `train_dense()`, `prune()`, `cluster()`, `export()`, `verify()` and
`report()` can also be called alone (each takes its input model explicitly, or the previous stage's).

`run(output_dir)` writes every file into a hidden working directory and moves the result into
`output_dir` only when all stages succeeded, so a failure or Ctrl-C never leaves a half-written result. It
writes only into a new or empty directory or over its own earlier result (`dc_keras.result_dir`), and
refuses anything else before training.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import numpy as np

from dc_keras import interrupts, limits
from dc_keras.atomic import atomic_write, scratch_tempdir
from dc_keras.result_dir import NotOwnedError, OutputDirError, ResultDirectory  # noqa: F401 - run() raises them
# validate_data and check_data_fits_model belong to this module's API as well.
from dc_keras.validation import check_data_fits_model, check_layer_names, check_run_inputs, validate_data

PerLayer = Union[None, float, int, Dict[str, Any]]


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
      bits: codebook index bits per layer (2**bits shared values), 1..8; None = paper defaults; a layer given
        0 in a dict is not clustered (and so stays a stock op).
      index_bits: bits of the relative sparse indices per layer, 2..8; None = paper defaults.
      epochs: dense training epochs (0 when a trained model is given).
      prune_epochs: retraining epochs summed over all pruning iterations.
      prune_iterations: pruning steps; the target is reached along a cubic ramp (bigger steps first,
        as in tfmot's PolynomialDecay) with retraining after each step.
      cluster_epochs: centroid fine-tuning epochs.
      batch_size: training batch size of every stage.
      learning_rate, prune_learning_rate, cluster_learning_rate: Adam learning rates of each stage
        (retraining uses lower rates: the paper retrains pruned nets at 1/10 to 1/100 of the original).
      centroid_init: "linear" (the paper's best), "density", "random" or "kmeans++".
      validation_fraction: share of the training data held out for sensitivity analysis.
      seed: random seed of weight initialisation, shuffling and k-means.
    """

    sparsity: PerLayer = 0.9
    quality: PerLayer = None
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
    seed: int = 0

    def __post_init__(self):
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
        if not _is_int(self.seed):
            raise ValueError(f"CompressionConfig: seed must be an integer, got {self.seed!r}")

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
    if value is None:
        return
    if isinstance(value, dict):
        for layer, v in value.items():
            if not isinstance(layer, str):
                raise ValueError(f"CompressionConfig: {name} keys must be layer names, got {layer!r}")
            if not ok(v):
                raise ValueError(f"CompressionConfig: {name}[{layer!r}] must be {what}, got {v!r}")
    elif not ok(value):
        raise ValueError(f"CompressionConfig: {name} must be {what} or a dict of layer name -> value, got {value!r}")


def per_layer_value(value: PerLayer, layer_name: str, missing=None):
    """The value of a per-layer config field for one layer: the scalar, the dict entry, or `missing`."""
    if isinstance(value, dict):
        return value.get(layer_name, missing)
    return missing if value is None else value


def ramp(iteration: int, iterations: int) -> float:
    """Fraction of the final target reached after `iteration` of `iterations` steps (cubic, as tfmot)."""
    return 1.0 - (1.0 - iteration / iterations) ** 3


# --------------------------------------------------------------------------------------------------
# Files

# The files a run may write into its output directory (checked against files dc_keras did not write).
OUTPUT_FILES = ("dense.tflite", "dense_int8.tflite", "compressed.tflite", "report.txt", "report.json",
                "config.json", "weight_histograms.png", "codebook_centroids.png")

# The old name of the result directory writer (dc_keras.result_dir.ResultDirectory).
StagingDirectory = ResultDirectory


# --------------------------------------------------------------------------------------------------
# Data and Keras helpers

def _output_layer(model):
    """The layer that produces `model`'s (first) output, unwrapped from dc_keras's wrappers and nested models.

    Why the output tensor's history rather than `model.layers[-1]`: in a functional model the last listed
    layer need not produce the output, and pruning/clustering wrappers hide the inner layer's activation.
    """
    import keras

    layer = model
    for _ in range(64):  # nesting depth is small; the bound only guards against a cyclic structure
        if isinstance(layer, keras.layers.Wrapper):
            layer = layer.layer
            continue
        if not isinstance(layer, keras.Model):
            return layer
        producer = None
        outputs = getattr(layer, "outputs", None) or []
        history = getattr(outputs[0], "_keras_history", None) if outputs else None
        if history is not None:
            producer = history[0]
        if producer is None or producer is layer:
            producer = layer.layers[-1] if layer.layers else None
        if producer is None:
            return None
        layer = producer
    return layer


def _output_is_probability(model) -> bool:
    """True when the model ends in a softmax (also inside a pruning/clustering wrapper or a nested model),
    so the loss must not apply one again."""
    import keras

    last = _output_layer(model)
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def compile_for_classification(model, learning_rate: float, labels_one_hot: bool):
    """Compile with Adam and the cross-entropy matching the model's output and the labels' form."""
    import keras

    from_logits = not _output_is_probability(model)
    loss = (keras.losses.CategoricalCrossentropy(from_logits=from_logits) if labels_one_hot
            else keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    return model


def compressible_layers(model) -> List:
    """The layers of `model` dc_keras compresses (descending into nested models), in order."""
    from dc_keras import layer_registry

    found = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            found.extend(compressible_layers(layer))
        elif layer.weights and layer_registry.is_supported(layer):
            found.append(layer)
    return found


def kernel_arrays(model) -> Dict[str, np.ndarray]:
    """layer name -> first compressible weight (the kernel) as NumPy, for statistics and plots."""
    from dc_keras import layer_registry

    return {layer.name: np.asarray(layer_registry.compressible_weights(layer)[0][1].numpy())
            for layer in compressible_layers(model)}


def copy_model(model):
    """A separate Keras model with the same architecture and weights (the stages mutate layers in place)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def tflite_from_keras(model, scratch_dir: Optional[str] = None, int8: bool = False) -> bytes:
    """Stock TFLite conversion of a Keras model: the dense reference files.

    The same converter route as dc_keras.export_tflite, so that dense and compressed files differ only by
    what compression did. int8=True gives dynamic-range quantization (int8 weights, float activations:
    Optimize.DEFAULT without a representative dataset), the strongest stock baseline for speed and size.
    The converter's temporary SavedModel goes under `scratch_dir` when given.
    """
    import tensorflow as tf

    from dc_keras import _tf_notices

    with _tf_notices.filtered(conversion=True), scratch_tempdir(scratch_dir):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def tflite_accuracy(path_or_bytes, x: np.ndarray, y: np.ndarray, batch_size: int = 1000,
                    with_dc_delegate: bool = False) -> float:
    """Top-1 accuracy of a .tflite file run by ai_edge_litert, with dc_keras's delegate if asked (files with
    dc custom ops need it)."""
    kwargs = {}
    if isinstance(path_or_bytes, (bytes, bytearray)):
        kwargs["model_content"] = bytes(path_or_bytes)
    else:
        kwargs["model_path"] = str(path_or_bytes)
    if with_dc_delegate:
        from dc_keras import delegate

        interpreter = delegate.make_interpreter(**kwargs)
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(**kwargs)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    labels = y.argmax(axis=-1) if y.ndim == 2 else y
    correct, shape = 0, None
    for start in range(0, len(x), batch_size):
        batch = np.asarray(x[start:start + batch_size], np.float32)
        if batch.shape != shape:
            interpreter.resize_tensor_input(input_index, batch.shape)
            interpreter.allocate_tensors()
            shape = batch.shape
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        predictions = interpreter.get_tensor(output_index)
        correct += int(np.sum(predictions.argmax(axis=-1) == labels[start:start + batch_size]))
    return correct / len(x)


# --------------------------------------------------------------------------------------------------
# The pipeline

@dataclasses.dataclass
class StageResult:
    """Accuracy and time of one finished stage (accuracy on the test set, None when not measured)."""

    name: str
    accuracy: Optional[float]
    seconds: float
    details: Dict[str, Any] = dataclasses.field(default_factory=dict)


class DeepCompression:
    """Deep Compression of one Keras classifier: prune, share weights, export with Huffman coding.

    Args:
      config: a CompressionConfig (default: its defaults).
      data: ((x_train, y_train), (x_test, y_test)) NumPy arrays; y as class ids or one-hot rows. Needed by
        every stage that trains or measures accuracy.
      verbose: 0 silent, 1 stage headers and Keras progress bars, 2 headers and one line per epoch.

    Each stage method takes its input model explicitly or uses the previous stage's result, stores its
    output model as an attribute (dense_model, pruned_model, clustered_model) and records a StageResult
    in `self.stages`. Models given to a stage are not modified (the stages work on copies).

    Example:
      dc = DeepCompression(CompressionConfig(sparsity={"ip1": 0.92, "ip2": 0.91, "ip3": 0.74}), data)
      dc.run(lenet_300_100(), output_dir="out/")    # or dc.train_dense(...); dc.prune(); ...
    """

    def __init__(self, config: Optional[CompressionConfig] = None, data=None, verbose: int = 1):
        self.config = config if config is not None else CompressionConfig()
        if not isinstance(self.config, CompressionConfig):
            raise TypeError(f"config must be a CompressionConfig, got {type(self.config).__name__}")
        self.config.validate()
        self.data = validate_data(data) if data is not None else None
        self.verbose = verbose
        self.dense_model = None
        self.pruned_model = None
        self.clustered_model = None
        self.export_report = None
        self.files: Dict[str, str] = {}
        self.stages: Dict[str, StageResult] = {}
        self.verification: Dict[str, Any] = {}
        self.sensitivity = None
        self._stage_count = 0

    # -- helpers -----------------------------------------------------------------------------------

    def _header(self, title: str) -> float:
        interrupts.check()
        self._stage_count += 1
        if self.verbose:
            print(f"\n=== dc_keras stage {self._stage_count}: {title} ===", flush=True)
        return time.perf_counter()

    def _require_data(self, stage: str):
        if self.data is None:
            raise ValueError(f"{stage} needs data: DeepCompression(config, data=((x_train, y_train), "
                             "(x_test, y_test)))")
        return self.data

    def _fit_data(self):
        """Training examples, minus the validation share held out for sensitivity analysis."""
        (x, y), _ = self._require_data("training")
        held_out = int(len(x) * self.config.validation_fraction)
        return (x[:len(x) - held_out], y[:len(y) - held_out]) if held_out else (x, y)

    def validation_data(self):
        """The held-out tail of the training data (or the test set when validation_fraction is 0)."""
        (x, y), test = self._require_data("validation")
        held_out = int(len(x) * self.config.validation_fraction)
        return (x[len(x) - held_out:], y[len(y) - held_out:]) if held_out else test

    def _one_hot(self) -> bool:
        return self._require_data("training")[0][1].ndim == 2

    def _fit(self, model, epochs: int, learning_rate: float, callbacks=()):
        compile_for_classification(model, learning_rate, self._one_hot())
        if epochs:
            x, y = self._fit_data()
            model.fit(x, y, batch_size=self.config.batch_size, epochs=epochs,
                      callbacks=[*callbacks, _interrupt_check_callback()], verbose=self.verbose, shuffle=True)
        return model

    def _evaluate(self, model) -> float:
        _, (x_test, y_test) = self._require_data("evaluation")
        compile_for_classification(model, self.config.learning_rate, self._one_hot())
        return float(model.evaluate(x_test, y_test, batch_size=1000, verbose=0)[1])

    def _input(self, model, attribute: str, stage: str):
        model = model if model is not None else getattr(self, attribute)
        if model is None:
            raise ValueError(f"{stage}: give a model or run the previous stage first")
        if not compressible_layers(model):
            raise ValueError(
                f"{stage}: model {model.name!r} has no compressible layers (Dense, Conv1D/2D, DepthwiseConv2D, "
                "Conv2DTranspose, Embedding, or layers implementing get_prunable_weights())")
        if self.data is not None:
            check_data_fits_model(model, self.data)
        return model

    def _record(self, name, model, start, **details) -> StageResult:
        interrupts.check()
        accuracy = self._evaluate(model) if model is not None and self.data is not None else None
        result = StageResult(name, accuracy, time.perf_counter() - start, details)
        self.stages[name] = result
        if self.verbose and accuracy is not None:
            print(f"{name}: test accuracy {accuracy:.4f} ({result.seconds:.0f} s)", flush=True)
        return result

    # -- stages ------------------------------------------------------------------------------------

    def train_dense(self, model, epochs: Optional[int] = None):
        """Train `model` (a fresh or pre-trained Keras classifier) densely; returns the trained copy."""
        import keras

        epochs = self.config.epochs if epochs is None else epochs
        start = self._header(f"dense training ({epochs} epochs)")
        self._input(model, "dense_model", "train_dense")
        keras.utils.set_random_seed(self.config.seed)
        trained = copy_model(model)
        self._fit(trained, epochs, self.config.learning_rate)
        self.dense_model = trained
        self._record("dense", trained, start, epochs=epochs)
        return trained

    def sensitivity_targets(self, budget: float, model=None, sparsities=None):
        """Run `sensitivity_analysis` on the validation split; set config.sparsity to its proposal.

        Raises ValueError when no layer can be pruned within `budget` (the budget is unmeetable).
        """
        from dc_keras.sensitivity import DEFAULT_SPARSITIES, sensitivity_analysis

        model = self._input(model, "dense_model", "sensitivity analysis")
        start = self._header(f"sensitivity analysis (budget {budget:.4f})")
        probe = copy_model(model)
        result = sensitivity_analysis(probe, self.validation_data(), sparsities=sparsities or DEFAULT_SPARSITIES,
                                      budget=budget, verbose=self.verbose, batch_size=1000)
        self.sensitivity = result
        if not result.feasible:
            worst = {n: round(result.baseline - c[0], 4) for n, c in result.curves.items()}
            raise ValueError(
                f"accuracy budget {budget} cannot be met: pruning any layer to {min(result.sparsities):.0%} "
                f"already costs more (drops per layer: {worst}); raise --budget")
        self.config = self.config.replace(sparsity=dict(result.proposal), quality=None)
        self.stages["sensitivity"] = StageResult("sensitivity", result.combined, time.perf_counter() - start,
                                                 {"proposal": dict(result.proposal)})
        return result

    def _schedules(self, model, iteration: int):
        """per_layer schedules for one pruning iteration: the target scaled by the cubic ramp."""
        from dc_keras.pruning.schedule import ConstantSparsity, SensitivityThreshold

        fraction = ramp(iteration, self.config.prune_iterations)
        # The mask is computed once, at the first training step of the iteration, and then held while the
        # survivors retrain (prune, then retrain, then prune more: the paper's iterative pruning). Step 1 is
        # the first step the wrappers see; a huge frequency means "never again".
        first, hold = 1, 10 ** 9
        schedules = {}
        for layer in compressible_layers(model):
            if self.config.quality is not None:
                q = per_layer_value(self.config.quality, layer.name)
                schedules[layer.name] = SensitivityThreshold(q * fraction, first, -1, hold) if q else None
            else:
                s = per_layer_value(self.config.sparsity, layer.name, 0.0)
                schedules[layer.name] = ConstantSparsity(s * fraction, first, -1, hold) if s > 0 else None
        return schedules

    def _prune_once(self, model):
        """Prune to the final targets without retraining (prune_epochs == 0): masks applied directly."""
        from dc_keras import layer_registry
        from dc_keras.sensitivity import magnitude_prune

        for layer in compressible_layers(model):
            for _, variable in layer_registry.compressible_weights(layer):
                values = np.asarray(variable.numpy())
                if self.config.quality is not None:
                    q = per_layer_value(self.config.quality, layer.name)
                    if q:
                        variable.assign(np.where(np.abs(values) < q * values.std(), 0, values).astype(values.dtype))
                else:
                    s = per_layer_value(self.config.sparsity, layer.name, 0.0)
                    if s > 0:
                        variable.assign(magnitude_prune(values, s))
        return model

    def prune(self, model=None):
        """Iterative magnitude pruning with retraining; returns the stripped pruned model."""
        import dc_keras
        from dc_keras.callbacks import UpdatePruningStep

        model = self._input(model, "dense_model", "prune")
        check_layer_names(model, self.config, ("sparsity", "quality"))
        c = self.config
        start = self._header(f"pruning: {c.prune_iterations} iterations, {c.prune_epochs} retraining epochs")
        current = copy_model(model)
        if not c.prune_epochs:
            current = self._prune_once(current)
        base, extra = divmod(c.prune_epochs, c.prune_iterations)
        for iteration in range(1, c.prune_iterations + 1) if c.prune_epochs else ():
            epochs = base + (1 if iteration <= extra else 0)
            schedules = self._schedules(current, iteration)
            if not any(schedules.values()):
                break
            if self.verbose:
                targets = ", ".join(f"{n} {_describe(s)}" for n, s in schedules.items())
                print(f"pruning iteration {iteration}/{c.prune_iterations} ({epochs} epochs): {targets}", flush=True)
            wrapped = dc_keras.prune_low_magnitude(current, per_layer=schedules)
            self._fit(wrapped, epochs, c.prune_learning_rate, callbacks=[UpdatePruningStep()])
            current = dc_keras.strip_pruning(wrapped)
        self.pruned_model = current
        sparsity = {n: float(np.mean(k == 0)) for n, k in kernel_arrays(current).items()}
        self._record("pruned", current, start, sparsity=sparsity)
        if self.verbose:
            print("kernel sparsity: " + ", ".join(f"{n} {s:.1%}" for n, s in sparsity.items()), flush=True)
        return current

    def cluster(self, model=None):
        """Weight sharing with centroid fine-tuning, zeros preserved; returns the stripped model.

        With bits == 0 for every layer the stage is skipped and its input returned.
        """
        import dc_keras

        model = self._input(model, "pruned_model", "cluster")
        c = self.config
        check_layer_names(model, c, ("bits",))
        start = self._header(f"weight sharing ({c.cluster_epochs} fine-tuning epochs, init {c.centroid_init})")
        names = [layer.name for layer in compressible_layers(model)]
        bits = {n: per_layer_value(c.bits, n) for n in names}
        skip = [n for n, b in bits.items() if b == 0]
        chosen = {n: b for n, b in bits.items() if b not in (None, 0)}
        if len(skip) == len(names):
            self.clustered_model = model
            self.stages["clustered"] = StageResult("clustered", self.stages.get("pruned", StageResult(
                "pruned", None, 0)).accuracy, 0.0, {"skipped": True})
            return model
        source = copy_model(model)
        keras_bits = chosen if chosen else None
        if skip:
            # Leave the skipped layers as they are: clustering layer by layer lets us pass over them.
            clustered = _cluster_some(source, [n for n in names if n not in skip], keras_bits, c)
        else:
            clustered = dc_keras.cluster_weights(source, bits=keras_bits, cluster_centroids_init=c.centroid_init,
                                                 preserve_sparsity=True, seed=c.seed)
        self._fit(clustered, c.cluster_epochs, c.cluster_learning_rate)
        stripped = dc_keras.strip_clustering(clustered)
        self.clustered_model = stripped
        distinct = {n: int(np.unique(k[k != 0]).size) for n, k in kernel_arrays(stripped).items()}
        self._record("clustered", stripped, start, distinct_nonzero_values=distinct)
        if self.verbose:
            print("distinct nonzero values: " + ", ".join(f"{n} {d}" for n, d in distinct.items()), flush=True)
        return stripped

    def export(self, output_dir: str, model=None, dense_model=None, verify: bool = True):
        """Write compressed.tflite (dc_keras.export_tflite), and the stock baselines dense.tflite (float32) and
        dense_int8.tflite (dynamic-range int8, what dc-benchmark compares against) into `output_dir`.

        Each file is written under a temporary name and renamed. Returns the exporter's report.
        """
        import dc_keras

        model = self._input(model, "clustered_model", "export")
        dense_model = dense_model if dense_model is not None else self.dense_model
        start = self._header("export: relative indices + codebook + Huffman coding -> .tflite")
        os.makedirs(output_dir, exist_ok=True)
        compressed_path = os.path.join(output_dir, "compressed.tflite")
        # bits=None: the exporter stores each layer with the fewest index bits that hold its shared values,
        # which is never more than the clustering bits. The exporter writes atomically itself.
        report = dc_keras.export_tflite(model, compressed_path, index_bits=self.config.index_bits, verify=verify)
        self.files["compressed.tflite"] = compressed_path
        interrupts.check()
        if dense_model is not None:
            dense_path = os.path.join(output_dir, "dense.tflite")
            atomic_write(dense_path, tflite_from_keras(dense_model, scratch_dir=output_dir))
            self.files["dense.tflite"] = dense_path
            interrupts.check()
            int8_path = os.path.join(output_dir, "dense_int8.tflite")
            atomic_write(int8_path, tflite_from_keras(dense_model, scratch_dir=output_dir, int8=True))
            self.files["dense_int8.tflite"] = int8_path
        self.export_report = report
        self.stages["export"] = StageResult("export", None, time.perf_counter() - start,
                                            {"files": {k: os.path.basename(v) for k, v in self.files.items()}})
        if self.verbose:
            for name, path in self.files.items():
                print(f"{name}: {os.path.getsize(path)} bytes", flush=True)
        return report

    def verify(self, files: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
        """Test accuracy of each written .tflite, next to the Keras model it came from.

        compressed.tflite runs with dc_keras's delegate (its dc custom ops need it); dense.tflite with the
        stock interpreter. A compressed file more than 0.5 points below its Keras model is an error.
        """
        files = dict(files if files is not None else self.files)
        if not files:
            raise ValueError("verify: nothing exported yet; run export() first or pass {name: path}")
        start = self._header("verification: .tflite accuracy on the test set")
        _, (x_test, y_test) = self._require_data("verify")
        results = {}
        for name, path in files.items():
            accuracy = tflite_accuracy(path, x_test, y_test, with_dc_delegate=(name == "compressed.tflite"))
            keras_stage = "clustered" if name == "compressed.tflite" else "dense"
            keras_accuracy = self.stages[keras_stage].accuracy if keras_stage in self.stages else None
            results[name] = {"accuracy": accuracy, "keras_accuracy": keras_accuracy, "bytes": os.path.getsize(path)}
            if self.verbose:
                shown = f"{keras_accuracy:.4f}" if keras_accuracy is not None else "n/a"
                print(f"{name}: .tflite accuracy {accuracy:.4f} (Keras {shown})", flush=True)
            if name == "compressed.tflite" and keras_accuracy is not None and accuracy < keras_accuracy - 0.005:
                raise RuntimeError(f"verification failed: {name} reaches {accuracy:.4f} but its Keras model "
                                   f"{keras_accuracy:.4f}")
        self.verification = results
        self.stages["verify"] = StageResult("verify", results.get("compressed.tflite", {}).get("accuracy"),
                                            time.perf_counter() - start)
        return results

    def report(self) -> Dict[str, Any]:
        """The result as a JSON-serialisable dict: Table-2 rows per layer and total, files, accuracies."""
        rows = table2_rows(self.export_report)
        dense_bytes = self.verification.get("dense.tflite", {}).get("bytes") or _size(self.files.get("dense.tflite"))
        compressed_bytes = (self.verification.get("compressed.tflite", {}).get("bytes")
                            or _size(self.files.get("compressed.tflite")))
        int8_bytes = _size(self.files.get("dense_int8.tflite"))
        result = {
            "config": dataclasses.asdict(self.config),
            "table2": rows,
            "stock_layers": list(self.export_report.stock) if self.export_report is not None else [],
            "export_verification": (self.export_report.verification
                                    if self.export_report is not None else None),
            "files": {"dense.tflite": dense_bytes, "dense_int8.tflite": int8_bytes,
                      "compressed.tflite": compressed_bytes,
                      "ratio": (dense_bytes / compressed_bytes) if dense_bytes and compressed_bytes else None},
            "accuracy": {name: stage.accuracy for name, stage in self.stages.items()
                         if name in ("dense", "pruned", "clustered")},
            "tflite_accuracy": {name: v["accuracy"] for name, v in self.verification.items()},
            "seconds": {name: round(stage.seconds, 1) for name, stage in self.stages.items()},
        }
        if self.sensitivity is not None:
            result["sensitivity"] = self.sensitivity.to_dict()
        return result

    def run(self, model, output_dir: str, plots: bool = True, budget: Optional[float] = None,
            skip_dense_training: bool = False, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """All stages; every file appears under `output_dir` at once, only if everything succeeded.

        Args:
          model: the Keras classifier to train (or, with skip_dense_training, already trained).
          output_dir: result directory: new, empty, or holding an earlier dc_keras result (whose files are
            replaced only when the run succeeded; files dc_keras did not write stay). Anything else raises
            NotOwnedError, and a directory that cannot be created or written OutputDirError, before training.
          plots: write PNG weight histograms and codebook plots (needs matplotlib; a notice otherwise).
          budget: if given, per-layer sparsities come from `sensitivity_analysis` on the validation split
            with this largest accuracy drop (absolute), replacing config.sparsity/quality.
          skip_dense_training: `model` is trained already; use it as the dense model.
          metadata: extra JSON-serialisable entries for report.json (e.g. the model and data used).

        Writes dense.tflite, compressed.tflite, report.txt, report.json, config.json, the plots and the
        manifest .dc_keras_manifest.json. Returns `report()` (plus `metadata`). SIGINT or SIGTERM stop the
        run with `interrupts.Interrupted` (a KeyboardInterrupt), the old result untouched, even when Python
        swallowed the first KeyboardInterrupt (in a weakref callback or __del__).
        """
        self._require_data("run")
        check_run_inputs(model, self.config, self.data)  # before anything trains or is written
        with interrupts.InterruptGuard(), ResultDirectory(output_dir, OUTPUT_FILES) as staging:
            if skip_dense_training:
                self.dense_model = copy_model(self._input(model, "dense_model", "run"))
                self._record("dense", self.dense_model, time.perf_counter(), epochs=0)
            else:
                self.train_dense(model)
            if budget is not None:
                self.sensitivity_targets(budget)
            self.prune()
            self.cluster()
            self.export(staging.path)
            self.verify()
            report = self.report()
            if metadata:
                report = {**metadata, **report}
            atomic_write(os.path.join(staging.path, "report.json"), (json.dumps(report, indent=2) + "\n").encode())
            atomic_write(os.path.join(staging.path, "report.txt"), (format_report(report) + "\n").encode())
            self.config.save(os.path.join(staging.path, "config.json"))
            if plots:
                written = write_plots(staging.path, self.dense_model, self.pruned_model, self.clustered_model)
                if written is None and self.verbose:
                    print("notice: matplotlib is not installed; no PNG plots written "
                          "(pip install dc_keras[plots])", flush=True)
            if self.verbose:
                print("\n" + format_report(report), flush=True)
            staging.commit()
            try:
                interrupts.check()
            except interrupts.Interrupted as interrupt:
                interrupt.result_complete = True  # it came during the final renames, which finished first
                raise
        self.files = {name: os.path.join(staging.final, os.path.basename(path)) for name, path in self.files.items()}
        return report


def _interrupt_check_callback():
    """A Keras callback that stops training at the next batch once SIGINT/SIGTERM was recorded."""
    import keras

    class InterruptCheck(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            interrupts.check()

    return InterruptCheck()


def _describe(schedule) -> str:
    if schedule is None:
        return "dense"
    if hasattr(schedule, "quality"):
        return f"quality {schedule.quality:.3g}"
    return f"{schedule.target_sparsity:.1%}" if hasattr(schedule, "target_sparsity") else repr(schedule)


def _size(path):
    return os.path.getsize(path) if path and os.path.exists(path) else None


def _cluster_some(model, names, bits, config):
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


# --------------------------------------------------------------------------------------------------
# Report (paper Table 2)

TABLE2_COLUMNS = ("layer", "weights", "weights_pct_p", "weight_bits_pq", "weight_bits_pqh", "index_bits_pq",
                  "index_bits_pqh", "rate_pq", "rate_pqh")


def table2_rows(export_report) -> List[Dict[str, Any]]:
    """The paper's Table 2 rows (per compressed layer, then "total") from an ExportReport.

    Columns: #weights, weights% kept after pruning (P), weight bits per nonzero with fixed-width codes (P+Q)
    and after Huffman (P+Q+H), relative-index bits per nonzero likewise, and the compression rate
    (compressed bits / float32 bits) P+Q and P+Q+H.
    """
    if export_report is None:
        return []
    data = export_report.to_dict()
    rows = [{"layer": l["name"], "weights": l["weights"], "weights_pct_p": l["weights_fraction"],
             "weight_bits_pq": l["bits"], "weight_bits_pqh": l["weight_bits_pqh"],
             "index_bits_pq": l["index_bits"], "index_bits_pqh": l["index_bits_pqh"],
             "rate_pq": l["rate_pq"], "rate_pqh": l["rate_pqh"]} for l in data["layers"]]
    if rows:
        t = data["total"]
        rows.append({"layer": "total", "weights": t["weights"], "weights_pct_p": t["weights_fraction"],
                     "weight_bits_pq": t["weight_bits_pq"], "weight_bits_pqh": t["weight_bits_pqh"],
                     "index_bits_pq": t["index_bits_pq"], "index_bits_pqh": t["index_bits_pqh"],
                     "rate_pq": t["rate_pq"], "rate_pqh": t["rate_pqh"]})
    return rows


def format_report(report: Dict[str, Any]) -> str:
    """report.txt: the Table-2 layout of the paper, then file sizes and accuracies."""
    lines = ["Deep Compression report (Han, Mao, Dally 2016, Table 2 layout)", ""]
    header = (f"{'layer':<14}{'#weights':>10}{'weights%':>10}{'w bits':>8}{'w bits':>8}{'idx bits':>9}"
              f"{'idx bits':>9}{'rate':>9}{'rate':>9}")
    sub = f"{'':<14}{'':>10}{'(P)':>10}{'(P+Q)':>8}{'(P+Q+H)':>8}{'(P+Q)':>9}{'(P+Q+H)':>9}{'(P+Q)':>9}{'(P+Q+H)':>9}"
    lines += [header, sub]

    def fmt(value, spec):
        return format(value, spec) if isinstance(value, (int, float)) else "-"

    for row in report["table2"]:
        lines.append(f"{row['layer']:<14}{fmt(row['weights'], 'd'):>10}{fmt(row['weights_pct_p'], '.1%'):>10}"
                     f"{fmt(row['weight_bits_pq'], '.1f'):>8}{fmt(row['weight_bits_pqh'], '.1f'):>8}"
                     f"{fmt(row['index_bits_pq'], '.1f'):>9}{fmt(row['index_bits_pqh'], '.1f'):>9}"
                     f"{fmt(row['rate_pq'], '.2%'):>9}{fmt(row['rate_pqh'], '.2%'):>9}")
    total = report["table2"][-1] if report["table2"] else None
    if total and total.get("rate_pq") and total.get("rate_pqh"):
        lines.append(f"{'':<14}weights compressed {1 / total['rate_pq']:.1f}x (P+Q), "
                     f"{1 / total['rate_pqh']:.1f}x (P+Q+H)")
    for stock in report.get("stock_layers", []):
        lines.append(f"left stock: {stock.get('layer')} ({stock.get('op')}): {stock.get('reason')}")
    files = report["files"]
    lines.append("")
    int8 = (f", dense_int8.tflite {fmt(files['dense_int8.tflite'], 'd')} bytes"
            if files.get("dense_int8.tflite") else "")
    lines.append(f"dense.tflite {fmt(files['dense.tflite'], 'd')} bytes{int8}, compressed.tflite "
                 f"{fmt(files['compressed.tflite'], 'd')} bytes, ratio {fmt(files['ratio'], '.1f')}x")
    accuracy = ", ".join(f"{k} {v:.4f}" for k, v in report["accuracy"].items() if v is not None)
    lines.append(f"Keras test accuracy: {accuracy}")
    if report["tflite_accuracy"]:
        lines.append(".tflite test accuracy: "
                     + ", ".join(f"{k} {v:.4f}" for k, v in report["tflite_accuracy"].items()))
    if report.get("sensitivity"):
        proposal = report["sensitivity"]["proposal"]
        lines.append("sensitivity-analysis targets: " + ", ".join(f"{k} {v:.0%}" for k, v in proposal.items()))
    lines.append("seconds: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Plots

def write_plots(directory: str, dense_model, pruned_model, clustered_model) -> Optional[List[str]]:
    """PNG weight histograms (dense / pruned / clustered) per layer and codebook centroid plots.

    Returns the written paths, or None when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    stages = [(label, kernel_arrays(m)) for label, m in
              (("dense", dense_model), ("pruned", pruned_model), ("clustered", clustered_model)) if m is not None]
    if not stages:
        return []
    names = list(stages[0][1])
    written = []
    fig, axes = plt.subplots(len(names), len(stages), figsize=(4 * len(stages), 2.6 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for col, (label, kernels) in enumerate(stages):
            ax = axes[row][col]
            values = kernels.get(name)
            if values is None:
                ax.set_visible(False)
                continue
            nonzero = values[values != 0]
            ax.hist(nonzero, bins=100 if label != "clustered" else 200, color="C%d" % col)
            ax.set_title(f"{name} {label}: {nonzero.size}/{values.size} nonzero", fontsize=9)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    path = os.path.join(directory, "weight_histograms.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(path)

    if clustered_model is not None:
        kernels = kernel_arrays(clustered_model)
        fig, axes = plt.subplots(1, len(kernels), figsize=(3.2 * len(kernels), 3), squeeze=False)
        for ax, (name, values) in zip(axes[0], kernels.items()):
            centroids, counts = np.unique(values[values != 0], return_counts=True)
            ax.vlines(centroids, 0, counts, color="C3")
            ax.plot(centroids, counts, "o", color="C3", markersize=3)
            ax.set_title(f"{name}: {centroids.size} centroids", fontsize=9)
            ax.set_xlabel("shared value", fontsize=8)
            ax.set_ylabel("weights", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        path = os.path.join(directory, "codebook_centroids.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
