"""MobileNetV2 (keras.applications, alpha 0.35, weights=None) on Fashion-MNIST at 32x32, compressed end to
end: dense training, pruning with retraining to per-layer targets by layer kind, 4-bit weight sharing with
centroid fine-tuning, export (BatchNormalization scales separated from the folded weights), verification,
and dc-benchmark against the stock int8 and float files of the same run.

Usage:  python examples/mobilenet_v2.py [--output_dir runs/mobilenet_v2] [--epochs 15] [--prune_epochs 9]
        [--cluster_epochs 3] [--bits 4] [--train_examples N]
Prints the README row (file ratio, dense and compressed accuracy, latencies). Long on two CPU cores: try
--train_examples 5000 --epochs 2 --prune_epochs 1 --cluster_epochs 1 first.
"""
from __future__ import annotations

import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

from _real_networks import arguments, compress  # noqa: E402  (examples/_real_networks.py)




def main():
    args = arguments(__doc__.splitlines()[0], epochs=15, prune_epochs=9, cluster_epochs=3,
                     output_dir="runs/mobilenet_v2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 32x32 is not one of the ImageNet input sizes: intended
        model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10,
                                               classifier_activation=None, name="mobilenet_v2")
    compress(model, args)


if __name__ == "__main__":
    main()
