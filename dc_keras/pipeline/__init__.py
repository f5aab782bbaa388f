"""The whole Deep Compression pipeline, one stage at a time or end to end.

    dense training (or a given trained model)
    -> iterative pruning with retraining            (dc_keras.prune_low_magnitude, strip_pruning)
    -> weight sharing with centroid fine-tuning     (dc_keras.cluster_weights, strip_clustering)
    -> export with relative indices + Huffman       (dc_keras.export_tflite)
    -> verification (the .tflite files against the Keras models, on the test set)
    -> report (the paper's Table 2 columns per layer and in total, plus file sizes and accuracies, and
       whether the compressed model stayed within `max_drop` points of the validated dense model)

Every stage that trains selects its model on a validation split carved out of the training data (best
validated epoch); the test set gives only the reported numbers (`training`, `accuracy_budget`).

`DeepCompression(config)` holds one small `CompressionConfig` and the models each stage produced, so
`run()` does everything and `train_dense()`, `prune()`, `cluster()`, `export()`, `verify()` and
`report()` can also be called alone (each takes its input model explicitly, or the previous stage's).

`run(output_dir)` writes every file into a hidden working directory and moves the result into
`output_dir` only when all stages succeeded, so a failure or Ctrl-C never leaves a half-written result. It
writes only into a new or empty directory or over its own earlier result (`dc_keras.result_dir`), and
refuses anything else before training.

The package: `config` (CompressionConfig and the per-layer rule), `stages` (each stage as a function of its
input model, the data and the config), `keras_tools` (loss choice, copies, stock conversion, .tflite
accuracy), `report` (Table 2 and report.txt) and `plots`; this module is the façade that sequences them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, Mapping, Optional

from dc_keras import interrupts
from dc_keras.atomic import atomic_write
from dc_keras.pipeline import accuracy_budget, stages
from dc_keras.pipeline.config import CompressionConfig, PerLayer, dense_epoch_budget, per_layer_value, ramp
from dc_keras.pipeline.keras_tools import (_output_is_probability, _output_layer,  # noqa: F401 - tests use them
                                           compile_for_classification, compressible_layers, copy_model,
                                           kernel_arrays, tflite_accuracy, tflite_from_keras)
from dc_keras.pipeline.plots import write_plots  # run() looks it up here, where tests replace it
from dc_keras.pipeline.report import TABLE2_COLUMNS, all_weights_summary, format_report, table2_rows
from dc_keras.result_dir import NotOwnedError, OutputDirError, ResultDirectory  # run() raises them
# validate_data and check_data_fits_model belong to this module's API as well.
from dc_keras.validation import check_data_fits_model, check_layer_names, check_run_inputs, validate_data

__all__ = ["CompressionConfig", "DeepCompression", "StageResult", "StagingDirectory", "OUTPUT_FILES", "PerLayer",
           "TABLE2_COLUMNS", "NotOwnedError", "OutputDirError", "atomic_write", "check_data_fits_model",
           "compile_for_classification", "compressible_layers", "copy_model", "format_report", "kernel_arrays",
           "per_layer_value", "ramp", "table2_rows", "tflite_accuracy", "tflite_from_keras", "validate_data",
           "write_plots"]

# The files a run may write into its output directory (checked against files dc_keras did not write).
OUTPUT_FILES = ("dense.tflite", "dense_int8.tflite", "compressed.tflite", "report.txt", "report.json",
                "config.json", "weight_histograms.png", "codebook_centroids.png")

# The old name of the result directory writer (dc_keras.result_dir.ResultDirectory).
StagingDirectory = ResultDirectory


@dataclasses.dataclass
class StageResult:
    """Accuracy and time of one finished stage (accuracy on the test set, validation_accuracy on the
    validation split; None when not measured)."""

    name: str
    accuracy: Optional[float]
    seconds: float
    details: Dict[str, Any] = dataclasses.field(default_factory=dict)
    validation_accuracy: Optional[float] = None


class DeepCompression:
    """Deep Compression of one Keras classifier: prune, share weights, export with Huffman coding.

    Args:
      config: a CompressionConfig (default: its defaults).
      data: ((x_train, y_train), (x_test, y_test)) NumPy arrays; y as class ids or one-hot rows. Needed by
        every stage that trains or measures accuracy.
      verbose: 0 silent, 1 stage headers and Keras progress bars, 2 headers and one line per epoch.

    Each stage method takes its input model explicitly or uses the previous stage's result, stores its
    output model as an attribute (dense_model, prune_start_model, pruned_model, clustered_model) and records a StageResult
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
        self.prune_start_model = None
        self.pruned_model = None
        self.clustered_model = None
        self.export_report = None
        self.files: Dict[str, str] = {}
        self.stages: Dict[str, StageResult] = {}
        self.verification: Dict[str, Any] = {}
        self.sensitivity = None
        self.auto_rounds = []
        self.bit_allocation = None
        self._stage_count = 0
        self._splits = None

    # -- helpers -----------------------------------------------------------------------------------

    def _header(self, title: str) -> float:
        interrupts.check()
        self._stage_count += 1
        if self.verbose:
            print(f"\n=== dc_keras stage {self._stage_count}: {title} ===", flush=True)
        return time.perf_counter()

    def _require_data(self, stage: str):
        return stages.require_data(self.data, stage)

    def splits(self):
        """The data as DataSplits (fit, validation, test), carved once per validation_fraction and seed."""
        key = (self.config.validation_fraction, self.config.seed)
        if self._splits is None or self._splits[0] != key:
            self._splits = (key, stages.splits(self._require_data("training"), self.config))
        return self._splits[1]

    def validation_data(self):
        """The validation split: a seeded random share of the training data (None when validation_fraction
        is 0)."""
        return self.splits().validation if self.data is not None else None

    def _teacher(self, model):
        """The distillation teacher of a stage: the dense model, else the stage's input."""
        if not self.config.distill_weight:
            return None
        return self.dense_model if self.dense_model is not None else model

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
        measured = model is not None and self.data is not None
        accuracy = stages.evaluate(model, self.splits(), self.config) if measured else None
        validation = stages.validation_accuracy(model, self.splits(), self.config) if measured else None
        result = StageResult(name, accuracy, time.perf_counter() - start, details, validation)
        self.stages[name] = result
        if self.verbose and accuracy is not None:
            shown = f"validation accuracy {validation:.4f}, " if validation is not None else ""
            print(f"{name}: {shown}test accuracy {accuracy:.4f} ({result.seconds:.0f} s)", flush=True)
        return result

    def _print(self, title: str, values: Mapping[str, Any], spec: str) -> None:
        if self.verbose:
            print(f"{title}: " + ", ".join(f"{n} {format(v, spec)}" for n, v in values.items()), flush=True)

    # -- stages ------------------------------------------------------------------------------------

    def train_dense(self, model, epochs: Optional[int] = None):
        """Train `model` (a fresh or pre-trained Keras classifier) densely; returns the trained copy.

        Runs up to `epochs` (default: the compressed model's whole budget, config.dense_epoch_budget),
        stopping config.patience epochs after the validation accuracy last improved; keeps the best
        validated epoch. That model is the baseline (and the distillation teacher); `prune()` starts from
        `prune_start_model`, the model as the first learning rate left it (stages.train_dense says why).
        """
        epochs = dense_epoch_budget(self.config) if epochs is None else epochs
        start = self._header(f"dense training (up to {epochs} epochs, best validated epoch kept)")
        self._input(model, "dense_model", "train_dense")
        trained, summary, prune_start = stages.train_dense(model, self.splits(), self.config, epochs,
                                                           verbose=self.verbose)
        self.dense_model, self.prune_start_model = trained, prune_start
        self._record("dense", trained, start, epochs=epochs, **summary)
        if self.verbose and summary["best_epoch"]:
            print(f"dense: best validated epoch {summary['best_epoch']} of {summary['epochs_run']} run", flush=True)
        if self.verbose and summary["prune_start_epoch"]:
            print(f"pruning starts from epoch {summary['prune_start_epoch']}, the best at learning rate "
                  f"{self.config.learning_rate:g}", flush=True)
        return trained

    def sensitivity_targets(self, budget: float, model=None, sparsities=None):
        """Run `sensitivity_analysis` on the validation split; set config.sparsity to its proposal.

        Raises ValueError when no layer can be pruned within `budget` (the budget is unmeetable).
        """
        model = self._input(model, "dense_model", "sensitivity analysis")
        start = self._header(f"sensitivity analysis (budget {budget:.4f})")
        if self.validation_data() is None:
            raise ValueError("sensitivity analysis needs a validation split: set validation_fraction > 0")
        result = stages.sensitivity(model, self.validation_data(), budget, sparsities, verbose=self.verbose)
        self.sensitivity = result
        stages.check_budget_met(result, budget)
        self.config = self.config.replace(sparsity=dict(result.proposal), quality=None)
        self.stages["sensitivity"] = StageResult("sensitivity", result.combined, time.perf_counter() - start,
                                                 {"proposal": dict(result.proposal)})
        return result

    def prune(self, model=None):
        """Iterative magnitude pruning with retraining; returns the stripped pruned model."""
        model = self._input(model, "prune_start_model" if self.prune_start_model is not None else "dense_model",
                            "prune")
        check_layer_names(model, self.config, ("sparsity", "quality", "block_size"))
        c = self.config
        start = self._header(f"pruning: {c.prune_iterations} iterations, {c.prune_epochs} retraining epochs")
        pruned, summaries = stages.prune(model, self.splits(), c, verbose=self.verbose, teacher=self._teacher(model))
        self.pruned_model = pruned
        sparsity = stages.sparsity_by_layer(pruned)
        self._record("pruned", pruned, start, sparsity=sparsity, iterations=summaries)
        self._print("kernel sparsity", sparsity, ".1%")
        return pruned

    def cluster(self, model=None):
        """Weight sharing with centroid fine-tuning, zeros preserved; returns the stripped model.

        With bits == 0 for every layer the stage is skipped and its input returned.
        """
        model = self._input(model, "pruned_model", "cluster")
        check_layer_names(model, self.config, ("bits",))
        if self.config.bit_budget is not None:
            self._allocate_bits(model)
        c = self.config
        start = self._header(f"weight sharing ({c.cluster_epochs} fine-tuning epochs, init {c.centroid_init})")
        clustered, summary = stages.cluster(model, self.splits(), c, verbose=self.verbose, teacher=self._teacher(model))
        if clustered is None:
            self.clustered_model = model
            pruned = self.stages.get("pruned", StageResult("pruned", None, 0))
            self.stages["clustered"] = StageResult("clustered", pruned.accuracy, 0.0, {"skipped": True},
                                                   pruned.validation_accuracy)
            return model
        self.clustered_model = clustered
        distinct = stages.distinct_values_by_layer(clustered)
        self._record("clustered", clustered, start, distinct_nonzero_values=distinct, fit=summary)
        self._print("distinct nonzero values", distinct, "d")
        return clustered

    def _allocate_bits(self, model) -> None:
        """Per-layer bits from dc_keras.bit_allocation (config.bit_budget set); they replace config.bits."""
        from dc_keras import bit_allocation, layer_registry

        start = self._header(f"bit allocation (budget {self.config.bit_budget:.4f})")
        self._require_data("bit allocation")
        names = [layer.name for layer in compressible_layers(model)]
        upper = {layer.name: per_layer_value(self.config.bits, layer.name)
                 or layer_registry.DEFAULT_BITS[layer_registry.layer_kind(layer)]
                 for layer in compressible_layers(model)}
        skipped = [n for n in names if per_layer_value(self.config.bits, n) == 0]
        result = bit_allocation.allocate_bits(
            model, bit_allocation.selection_data(self.data, self.config), self.config.bit_budget,
            bit_allocation.candidate_bits([n for n in names if n not in skipped], upper), seed=self.config.seed,
            verbose=self.verbose)
        self.config = self.config.replace(bits={**result.bits, **{n: 0 for n in skipped}})
        self.bit_allocation = result
        self.stages["bit_allocation"] = StageResult("bit_allocation", result.accuracy, time.perf_counter() - start,
                                                    {"bits": dict(result.bits)})
        self._print("chosen bits", result.bits, "d")

    def export(self, output_dir: str, model=None, dense_model=None, verify: bool = True):
        """Write compressed.tflite (dc_keras.export_tflite), and the stock baselines dense.tflite (float32) and
        dense_int8.tflite (dynamic-range int8, what dc-benchmark compares against) into `output_dir`.

        Each file is written under a temporary name and renamed. Returns the exporter's report.
        """
        model = self._input(model, "clustered_model", "export")
        dense_model = dense_model if dense_model is not None else self.dense_model
        start = self._header("export: relative indices + codebook + Huffman coding -> .tflite")
        report, files = stages.export(model, dense_model, output_dir, self.config, verify=verify)
        self.files.update(files)
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
        self._require_data("verify")
        keras_accuracy = {}
        for name in files:
            keras_stage = "clustered" if name == "compressed.tflite" else "dense"
            keras_accuracy[name] = self.stages[keras_stage].accuracy if keras_stage in self.stages else None
        results = stages.verify(files, self.splits(), keras_accuracy, verbose=self.verbose)
        self.verification = results
        self.stages["verify"] = StageResult("verify", results.get("compressed.tflite", {}).get("accuracy"),
                                            time.perf_counter() - start)
        return results

    def accuracy_budget(self) -> Dict[str, Any]:
        """The compressed model's test accuracy against the validated dense model's and config.max_drop
        (accuracy_budget.budget_check); the compressed figure is compressed.tflite's when verified."""
        dense, clustered = self.stages.get("dense"), self.stages.get("clustered")
        tflite = self.verification.get("compressed.tflite", {}).get("accuracy")
        compressed = tflite if tflite is not None else (clustered.accuracy if clustered else None)
        return accuracy_budget.budget_check(
            dense.accuracy if dense else None, compressed, self.config.max_drop,
            dense.validation_accuracy if dense else None, clustered.validation_accuracy if clustered else None,
            "compressed.tflite" if tflite is not None else "clustered Keras model")

    def back_off(self, rounds: int) -> list:
        """While the compressed model's validation accuracy lies more than config.max_drop points below the
        dense model's, relax the most sensitive layer (accuracy_budget.relax: less sparsity, one more bit)
        and prune and cluster again from the dense model, at most `rounds` times. Decides on the
        validation split only. Returns (and keeps in `auto_rounds`) one dict per round."""
        if self.validation_data() is None:
            raise ValueError("--auto needs a validation split: set validation_fraction > 0")
        for round_number in range(1, rounds + 1):
            dense, clustered = self.stages["dense"], self.stages["clustered"]
            drop = accuracy_budget.drop_points(dense.validation_accuracy, clustered.validation_accuracy)
            if drop <= self.config.max_drop:
                break
            drops = accuracy_budget.layer_drops(stages.copy_model(self.dense_model), self.validation_data(),
                                                stages.sparsity_by_layer(self.pruned_model))
            relaxed, change = accuracy_budget.relax(self.config, self.dense_model, drops)
            if self.verbose:
                print(f"\nauto round {round_number}/{rounds}: validation drop {drop:.2f} points > max_drop "
                      f"{self.config.max_drop:g}; relaxing {change}", flush=True)
            if relaxed is None:
                break
            self.config = relaxed
            self.prune()
            self.cluster()
            after = accuracy_budget.drop_points(dense.validation_accuracy, self.stages["clustered"].validation_accuracy)
            self.auto_rounds.append({"round": round_number, "validation_drop_before": drop, "change": change,
                                     "validation_drop_after": after})
            if self.verbose:
                print(f"auto round {round_number}: validation drop now {after:.2f} points", flush=True)
        return self.auto_rounds

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
            "weights_all": all_weights_summary(self.export_report),
            "export_verification": (self.export_report.verification
                                    if self.export_report is not None else None),
            "files": {"dense.tflite": dense_bytes, "dense_int8.tflite": int8_bytes,
                      "compressed.tflite": compressed_bytes,
                      "ratio": (dense_bytes / compressed_bytes) if dense_bytes and compressed_bytes else None},
            "accuracy": {name: stage.accuracy for name, stage in self.stages.items()
                         if name in ("dense", "pruned", "clustered")},
            "validation_accuracy": {name: stage.validation_accuracy for name, stage in self.stages.items()
                                    if name in ("dense", "pruned", "clustered")},
            "tflite_accuracy": {name: v["accuracy"] for name, v in self.verification.items()},
            "accuracy_budget": self.accuracy_budget(),
            "auto_rounds": list(self.auto_rounds),
            "seconds": {name: round(stage.seconds, 1) for name, stage in self.stages.items()},
        }
        if self.sensitivity is not None:
            result["sensitivity"] = self.sensitivity.to_dict()
        if self.bit_allocation is not None:
            result["bit_allocation"] = self.bit_allocation.to_dict()
        if getattr(self.export_report, "breakdown", None):
            result["file_breakdown"] = dict(self.export_report.breakdown)
        return result

    def run(self, model, output_dir: str, plots: bool = True, budget: Optional[float] = None,
            skip_dense_training: bool = False, metadata: Optional[Dict[str, Any]] = None,
            auto_rounds: int = 0) -> Dict[str, Any]:
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
          auto_rounds: when > 0, `back_off` up to this many rounds while the validation drop exceeds
            config.max_drop.

        Writes dense.tflite, compressed.tflite, report.txt, report.json, config.json, the plots and the
        manifest .dc_keras_manifest.json. Returns `report()` (plus `metadata`). SIGINT or SIGTERM stop the
        run with `interrupts.Interrupted` (a KeyboardInterrupt), the old result untouched, even when Python
        swallowed the first KeyboardInterrupt (in a weakref callback or __del__).
        """
        self._require_data("run")
        check_run_inputs(model, self.config, self.data)  # before anything trains or is written
        if (budget is not None or auto_rounds) and self.validation_data() is None:
            raise ValueError(f"{'--budget' if budget is not None else '--auto'} needs a validation split: "
                             "set validation_fraction > 0")
        with interrupts.InterruptGuard(), ResultDirectory(output_dir, OUTPUT_FILES) as staging:
            if skip_dense_training:
                self.dense_model = copy_model(self._input(model, "dense_model", "run"))
                self.prune_start_model = None
                self._record("dense", self.dense_model, time.perf_counter(), epochs=0)
            else:
                self.train_dense(model)
            if budget is not None:
                self.sensitivity_targets(budget)
            self.prune()
            self.cluster()
            if auto_rounds:
                self.back_off(auto_rounds)
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


def _size(path):
    return os.path.getsize(path) if path and os.path.exists(path) else None
