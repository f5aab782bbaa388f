"""Shared body of examples/lenet_300_100.py and examples/lenet5.py: the paper's Table 2/3 on Fashion-MNIST."""
from __future__ import annotations

import argparse
import json
import os
import sys


def reproduce(model_name: str, table: str, default_output: str) -> int:
    """Runs the full pipeline on a built-in LeNet with dc-compress's preset and prints the paper's table.

    Args:
      model_name: "lenet300" or "lenet5" (dc_keras.presets.BUILTIN_PRESETS keys).
      table: the paper table this mirrors, for the heading ("Table 2" or "Table 3").
      default_output: output directory when --output_dir is not given.
    """
    parser = argparse.ArgumentParser(description=f"Reproduce Deep Compression's {table} on Fashion-MNIST")
    parser.add_argument("--output_dir", default=default_output)
    parser.add_argument("--train_examples", type=int, default=None, help="use only the first N (quick try)")
    parser.add_argument("--epochs_scale", type=float, default=1.0,
                        help="multiply every preset epoch count (e.g. 0.3 for a quick try)")
    args = parser.parse_args()

    import dc_keras
    from dc_keras.cli.compress import load_data
    from dc_keras.pipeline import CompressionConfig, DeepCompression, format_report
    from dc_keras.presets import BUILTIN_PRESETS

    preset = dict(BUILTIN_PRESETS[model_name])
    for name in ("epochs", "prune_epochs", "cluster_epochs"):
        if name in preset:
            preset[name] = max(1, round(preset[name] * args.epochs_scale))
    # Each pruning iteration retrains at least one epoch.
    preset["prune_iterations"] = min(CompressionConfig().prune_iterations, preset.get("prune_epochs", 3))
    config = CompressionConfig().replace(**preset)
    data, source = load_data(None, args.train_examples)
    model = dc_keras.models.lenet_300_100() if model_name == "lenet300" else dc_keras.models.lenet5()
    print(f"{table} of Han, Mao, Dally (ICLR 2016) on {source}, settings: {json.dumps(preset)}", flush=True)
    report = DeepCompression(config, data, verbose=2).run(model, args.output_dir, plots=True)
    print(f"\n=== {table} ({model_name}, Fashion-MNIST) ===\n{format_report(report)}")
    print(f"files in {os.path.abspath(args.output_dir)}")
    dense_accuracy = report["tflite_accuracy"]["dense.tflite"]
    compressed_accuracy = report["tflite_accuracy"]["compressed.tflite"]
    # The paper's claim: no accuracy loss. Here: within 0.5 points of our own dense baseline.
    return 0 if compressed_accuracy >= dense_accuracy - 0.005 else 1


if __name__ == "__main__":
    sys.exit("run examples/lenet_300_100.py or examples/lenet5.py")
