"""dc-compress: train and compress a Keras classifier end to end with Deep Compression.

    dc-compress                                    # LeNet-300-100 on Fashion-MNIST -> ./dc_compress_output
    dc-compress --model lenet5 --output_dir out5
    dc-compress --model my_model.keras --data my_data.npz --budget 0.01
    dc-compress --block_size 16x1                  # Dense kernels but the last in blocks of 16 consecutive inputs
    dc-compress --epochs 2 --prune_epochs 3 --cluster_epochs 1 --train_examples 5000   # a quick try

Writes into --output_dir: dense.tflite and dense_int8.tflite (the stock float and int8 baselines that
dc-benchmark compares against), compressed.tflite, report.txt and report.json (the paper's Table 2
per layer and in total, file sizes, accuracies), config.json (the CompressionConfig used; --config
takes it back), and PNG plots (weight histograms before/after pruning and clustering, codebook
centroids) when matplotlib is installed, and .dc_keras_manifest.json (what it wrote, so that a rerun may
replace it). The result appears only when everything succeeded; --output_dir must be new, empty, or an
earlier dc-compress result (checked before training). Ctrl-C / SIGTERM exit 130 / 143, old result intact.
A compressed model more than --max_drop points below the validated dense model prints a warning; with
--strict the exit status is 3 (the result is still written).

--data takes an .npz with x_train, y_train, x_test, y_test; uint8 images are scaled to [0, 1], labels
are class ids (or one-hot rows). A --model file (.keras) is taken as trained: dense training is skipped
unless --epochs is given.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from absl import app, flags

from dc_keras import presets
from dc_keras.cli import keras_verbosity, one_line, run_tool
from dc_keras.presets import BUILTIN_MODELS, BUILTIN_PRESETS


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagValues:
    """Define dc-compress's flags in `flag_values` (once); called by `run()`, and by tests on their own
    FlagValues so that importing this module never clashes with other tools' flags."""
    if all(name in flag_values for name in _FLAG_NAMES):
        return flag_values  # defined already (run() called twice, or a test reusing its FlagValues)
    fv = flag_values
    flags.DEFINE_string("model", "lenet300", "lenet300, lenet5, or the path of a trained Keras model (.keras)",
                        flag_values=fv)
    flags.DEFINE_string("data", None, "an .npz with x_train, y_train, x_test, y_test "
                        "(default: Fashion-MNIST from the Debian package dataset-fashion-mnist)", flag_values=fv)
    flags.DEFINE_string("output_dir", "dc_compress_output", "result directory: new, empty, or an earlier dc-compress "
                        "result (its files replaced only on success)",
                        flag_values=fv)
    flags.DEFINE_string("config", None, "a config.json (CompressionConfig) to start from; other flags override it",
                        flag_values=fv)
    flags.DEFINE_float("budget", None, "largest accuracy drop (absolute, e.g. 0.01) allowed by the per-layer "
                       "sensitivity analysis that then chooses the per-layer sparsities", flag_values=fv)
    flags.DEFINE_float("sparsity", None, "target sparsity of every compressible layer (default: the paper's "
                       "per-layer values for lenet300/lenet5, else 0.9)", flag_values=fv)
    flags.DEFINE_float("quality", None, "prune |w| < quality * std(w) instead of a target sparsity", flag_values=fv)
    flags.DEFINE_string("block_size", None, "block-structured pruning of the Dense kernels as RxC: R consecutive "
                        "inputs by C consecutive outputs pruned or kept together, e.g. 16x1 (the last layer and "
                        "conv layers stay unstructured; 1x1 = unstructured, the default)", flag_values=fv)
    flags.DEFINE_integer("bits", None, "codebook index bits of every layer (default: 8 conv, 5 fully-connected)",
                         flag_values=fv)
    flags.DEFINE_float("bit_budget", None, "choose per-layer codebook bits after pruning: the smallest coded size "
                       "whose accuracy drop (before fine-tuning) stays within this (absolute, e.g. 0.005)",
                       flag_values=fv)
    flags.DEFINE_integer("index_bits", None, "relative sparse index bits (default: 8 conv, 5 fully-connected)",
                         flag_values=fv)
    flags.DEFINE_enum("bias_dtype", None, ["float16", "float32"], "how compressed.tflite stores the compressed "
                      "layers' biases (default float16: half the bytes, ~5e-4 relative rounding)", flag_values=fv)
    flags.DEFINE_integer("epochs", None, "dense training epochs", flag_values=fv)
    flags.DEFINE_integer("prune_epochs", None, "retraining epochs over all pruning iterations", flag_values=fv)
    flags.DEFINE_integer("prune_iterations", None, "pruning iterations (prune, retrain, prune more)", flag_values=fv)
    flags.DEFINE_bool("regrowth", None, "pruning with regrowth: every pruning iteration but the last trains the "
                      "pruned weights too (straight-through) and recomputes masks from them every few steps, so "
                      "weights pruned too early can come back; the last iteration fine-tunes a fixed mask "
                      "(--noregrowth overrides a --config that sets it)", flag_values=fv)
    flags.DEFINE_integer("cluster_epochs", None, "centroid fine-tuning epochs", flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "training batch size", flag_values=fv)
    flags.DEFINE_integer("seed", None, "random seed", flag_values=fv)
    flags.DEFINE_integer("train_examples", None, "use only the first N training examples (quick runs)",
                         flag_values=fv)
    flags.DEFINE_float("validation_fraction", None, "share of the training data held out (seeded shuffle) to "
                       "select each stage's best epoch and for --budget (default 0.1)", flag_values=fv)
    flags.DEFINE_integer("patience", None, "dense training stops after this many epochs without a better "
                         "validation accuracy (default 5)", flag_values=fv)
    flags.DEFINE_float("distill_weight", None, "weight in [0, 1] of distillation from the dense model during "
                       "retraining and fine-tuning (0 off)", flag_values=fv)
    flags.DEFINE_float("distill_temperature", None, "distillation temperature (default 4)", flag_values=fv)
    flags.DEFINE_float("max_drop", None, "largest allowed test-accuracy drop below the validated dense model, in "
                       "percentage points (default 0.5); a miss warns, or fails with --strict", flag_values=fv)
    flags.DEFINE_bool("strict", False, f"exit with status {EXIT_BUDGET_MISSED} (result still written) when "
                      "--max_drop is not met", flag_values=fv)
    flags.DEFINE_bool("auto", False, "when the validation drop exceeds --max_drop, relax the most sensitive "
                      "layer (less sparsity, one more bit) and retrain, up to --auto_rounds times", flag_values=fv)
    flags.DEFINE_integer("auto_rounds", 3, "most back-off rounds of --auto", lower_bound=1, flag_values=fv)
    flags.DEFINE_bool("plots", True, "write PNG plots (needs matplotlib)", flag_values=fv)
    flags.DEFINE_integer("verbosity_level", None, "0 quiet, 1 progress bars, 2 one line per epoch (default: 1 on a "
                         "terminal, 2 when stdout is a file or pipe)", lower_bound=0, upper_bound=2, flag_values=fv)
    return flag_values


_FLAG_NAMES = ("model", "data", "output_dir", "config", "budget", "sparsity", "quality", "block_size", "bits", "bit_budget",
               "index_bits", "bias_dtype",
               "epochs", "prune_epochs", "prune_iterations", "regrowth", "cluster_epochs", "batch_size", "seed",
               "train_examples", "validation_fraction", "patience", "distill_weight", "distill_temperature",
               "max_drop", "strict", "auto", "auto_rounds", "plots", "verbosity_level")

# Exit status of a run whose result was written but missed --max_drop under --strict.
EXIT_BUDGET_MISSED = 3


class InputError(ValueError):
    """Bad model, data or settings given on the command line."""


def load_model(spec: str):
    """(model, is_trained) for --model: a built-in name or the path of a saved Keras model."""
    if spec in BUILTIN_MODELS:
        return presets.builtin_model(spec), False
    if not os.path.exists(spec):
        raise InputError(f"--model {spec!r}: not {' or '.join(BUILTIN_MODELS)} and no such file")
    import keras

    try:
        model = keras.models.load_model(spec, compile=False)
    except Exception as error:  # noqa: BLE001 - any loader failure is reported as bad input
        raise InputError(f"--model {spec}: cannot load it as a Keras model: {error}") from None
    if not isinstance(model, keras.Model):
        raise InputError(f"--model {spec}: holds a {type(model).__name__}, not a Keras model")
    return model, True


def load_data(path: Optional[str], train_examples: Optional[int] = None):
    """((x_train, y_train), (x_test, y_test)) from an .npz or Fashion-MNIST, uint8 images scaled to [0, 1]."""
    import numpy as np

    from dc_keras.validation import validate_data

    if path is None:
        import dc_keras

        try:
            (x_train, y_train), (x_test, y_test) = dc_keras.datasets.fashion_mnist()
        except Exception as error:  # noqa: BLE001 - missing files or a failed download
            raise InputError(f"cannot load Fashion-MNIST ({error}); install the Debian package "
                             "dataset-fashion-mnist or pass --data") from None
        source = "Fashion-MNIST"
    else:
        if not os.path.exists(path):
            raise InputError(f"--data {path}: no such file")
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive.files]
                if missing:
                    raise InputError(f"--data {path}: missing arrays {missing}; it holds {sorted(archive.files)} "
                                     "and needs x_train, y_train, x_test, y_test")
                x_train, y_train, x_test, y_test = (archive[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        except InputError:
            raise
        except Exception as error:  # noqa: BLE001 - not an npz, pickled objects, ...
            raise InputError(f"--data {path}: cannot read it as an .npz of numeric arrays: {error}") from None
        source = os.path.abspath(path)

    def images(x, name):
        x = np.asarray(x)
        if x.dtype == np.uint8:
            return x.astype(np.float32) / 255.0
        if x.dtype.kind not in "fiu":
            raise InputError(f"{name} must be numeric images, got dtype {x.dtype}")
        return x.astype(np.float32)

    try:
        x_train, x_test = images(x_train, "x_train"), images(x_test, "x_test")
        if train_examples is not None:
            if train_examples < 1:
                raise InputError(f"--train_examples must be >= 1, got {train_examples}")
            x_train, y_train = x_train[:train_examples], y_train[:train_examples]
        data = validate_data(((x_train, y_train), (x_test, y_test)))
    except InputError:
        raise
    except ValueError as error:
        raise InputError(str(error)) from None
    return data, source


def parse_block_size(text: str):
    """``"RxC"`` (e.g. ``"16x1"``) -> ``(R, C)``; InputError naming the expected form otherwise."""
    parts = text.strip().lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise InputError(f"--block_size must be RxC with positive integers R and C, e.g. 16x1, got {text!r}")
    size = (int(parts[0]), int(parts[1]))
    if min(size) < 1:
        raise InputError(f"--block_size entries must be >= 1, got {text!r}")
    return size


def build_config(fv: flags.FlagValues, pretrained: bool, model=None):
    """The CompressionConfig from --config (or defaults) with the flags given on the command line applied.

    A `model` that is neither built in nor given --sparsity, --quality, --budget or --config gets per-layer
    targets by layer kind (presets.default_sparsity), printed with the reason for each.
    """
    from dc_keras.pipeline import CompressionConfig

    if fv.config:
        try:
            config = CompressionConfig.load(fv.config)
        except FileNotFoundError:
            raise InputError(f"--config {fv.config}: no such file") from None
        except ValueError as error:
            raise InputError(f"--config {fv.config}: {error}") from None
    else:
        config = CompressionConfig()
    changes = {}
    for name in ("epochs", "prune_epochs", "prune_iterations", "cluster_epochs", "batch_size", "seed", "bits",
                 "index_bits", "validation_fraction", "patience", "distill_weight", "distill_temperature",
                 "max_drop", "bit_budget", "regrowth", "bias_dtype"):
        if fv[name].value is not None:
            changes[name] = fv[name].value
    if fv.block_size is not None:
        changes["block_size"] = parse_block_size(fv.block_size)
    if fv.quality is not None:
        changes.update(quality=fv.quality, sparsity=None)
    if fv.sparsity is not None:
        if fv.quality is not None:
            raise InputError("give --sparsity or --quality, not both")
        changes.update(sparsity=fv.sparsity, quality=None)
    if fv.model in BUILTIN_PRESETS and not fv.config:
        for name, value in BUILTIN_PRESETS[fv.model].items():
            if name == "sparsity":
                if fv.sparsity is None and fv.quality is None and fv.budget is None:
                    changes.update(sparsity=value, quality=None)
            elif fv[name].value is None:
                changes[name] = value
    if (model is not None and fv.model not in BUILTIN_PRESETS and not fv.config and fv.sparsity is None
            and fv.quality is None and fv.budget is None):
        from dc_keras.pipeline import compressible_layers
        from dc_keras.presets import default_sparsity

        targets, reasons = default_sparsity(compressible_layers(model))
        changes.update(sparsity=targets, quality=None)
        print("dc-compress: no preset for this model: sparsity by layer kind (--sparsity, --quality or --budget "
              "override it):\n  " + "\n  ".join(reasons), flush=True)
    if pretrained and fv.epochs is None:
        changes["epochs"] = 0  # a given model is trained: no dense training unless asked
    iterations = changes.get("prune_iterations", config.prune_iterations)  # a preset's or the file's
    if fv.prune_iterations is None and 0 < changes.get("prune_epochs", 0) < iterations:
        changes["prune_iterations"] = changes["prune_epochs"]  # fewer epochs than iterations: one each
    if fv.regrowth is None and changes.get("regrowth") and changes.get("prune_epochs", config.prune_epochs) < 2:
        changes["regrowth"] = False  # a preset's regrowth needs 2 retraining epochs; a quicker run prunes plainly
    try:
        return config.replace(**changes)
    except ValueError as error:
        message = str(error).replace("CompressionConfig: ", "")
        if message.split(" ", 1)[0] in _FLAG_NAMES and fv[message.split(" ", 1)[0]].present:
            message = "--" + message  # the value came from this flag
        raise InputError(message) from None


def compress(fv: flags.FlagValues) -> int:
    """Run dc-compress with parsed flags; returns the exit status (0 success, 1 bad input or failure,
    EXIT_BUDGET_MISSED when --strict and --max_drop was not met)."""
    from dc_keras.pipeline import DeepCompression, compressible_layers
    from dc_keras.result_dir import NotOwnedError, OutputDirError, read_manifest
    from dc_keras.validation import check_run_inputs

    try:
        if fv.budget is not None and not fv.budget >= 0:
            raise InputError(f"--budget must be >= 0 (an absolute accuracy drop), got {fv.budget}")
        model, pretrained = load_model(fv.model)
        if not compressible_layers(model):
            raise InputError(f"--model {fv.model}: model {model.name!r} has no compressible layers (Dense, Conv, "
                             "Embedding): nothing to compress")
        config = build_config(fv, pretrained, model)
        data, source = load_data(fv.data, fv.train_examples)
        try:
            check_run_inputs(model, config, data)
        except ValueError as error:
            raise InputError(str(error)) from None
        output_dir = _checked_output_dir(fv.output_dir)
    except InputError as error:
        print(f"dc-compress: error: {one_line(error)}", file=sys.stderr)
        return 1

    pipeline = DeepCompression(config, data, verbose=keras_verbosity(fv.verbosity_level))
    metadata = {"model": fv.model, "data": source, "budget": fv.budget, "auto": fv.auto}
    try:
        report = pipeline.run(model, output_dir, plots=fv.plots, budget=fv.budget,
                              skip_dense_training=pretrained and config.epochs == 0, metadata=metadata,
                              auto_rounds=fv.auto_rounds if fv.auto else 0)
    except KeyboardInterrupt as interrupt:  # SIGINT or SIGTERM (dc_keras.interrupts.Interrupted)
        outcome = "the new result is complete" if getattr(interrupt, "result_complete", False) else "left as it was"
        print(f"\ndc-compress: {interrupt or 'interrupted'}; {output_dir} {outcome}", file=sys.stderr)
        return getattr(interrupt, "exit_status", 130)
    except (OutputDirError, NotOwnedError) as error:  # the directory changed during the run
        print(f"dc-compress: error: {_output_dir_message(fv.output_dir, error)}", file=sys.stderr)
        return 1
    except ValueError as error:  # unmeetable budget, export refusing the model, bad per-layer names, ...
        print(f"dc-compress: error: {error}", file=sys.stderr)
        print(f"dc-compress: nothing written to {output_dir}", file=sys.stderr)
        return 1
    except RuntimeError as error:  # verification failure
        print(f"dc-compress: failed: {error}", file=sys.stderr)
        print(f"dc-compress: nothing written to {output_dir}", file=sys.stderr)
        return 1
    written = read_manifest(output_dir) or {}  # the result's files, not what else the directory holds
    print(f"\ndc-compress: wrote {output_dir}: " + ", ".join(sorted(written)))
    return _budget_status(report.get("accuracy_budget") or {}, fv.strict)


def _budget_status(check, strict: bool) -> int:
    """0, or EXIT_BUDGET_MISSED under --strict, after a warning naming the gap when max_drop was missed."""
    from dc_keras.pipeline.accuracy_budget import shortfall_message

    if check.get("met") is not False:
        return 0
    print(f"dc-compress: {'error' if strict else 'warning'}: {shortfall_message(check)}", file=sys.stderr)
    return EXIT_BUDGET_MISSED if strict else 0


def _output_dir_message(flag_value: str, error) -> str:
    from dc_keras.result_dir import OutputDirError

    if isinstance(error, OutputDirError):
        return f"cannot write to --output_dir {flag_value}: {error.reason}"
    return f"refusing to write into --output_dir {flag_value}: {error.reason}"


def _checked_output_dir(flag_value: str) -> str:
    """--output_dir as an absolute path, once it is known to be writable and free of files we did not write."""
    from dc_keras.pipeline import OUTPUT_FILES
    from dc_keras.result_dir import NotOwnedError, OutputDirError, check_output_dir

    try:
        return check_output_dir(flag_value, OUTPUT_FILES)
    except (OutputDirError, NotOwnedError) as error:
        raise InputError(_output_dir_message(flag_value, error)) from None
    except OSError as error:
        raise InputError(f"cannot write to --output_dir {flag_value}: {error.strerror or error}") from None


def main(argv) -> int:
    """absl main: no positional arguments."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; see --help")
    return compress(flags.FLAGS)


def run() -> None:
    """Console-script entry point (setup.cfg: dc-compress = dc_keras.cli.compress:run)."""
    define_flags(flags.FLAGS)
    run_tool(main, __name__)


if __name__ == "__main__":
    run()
