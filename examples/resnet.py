"""A CIFAR-style ResNet (dc_keras.models.resnet: Conv-BN-ReLU blocks, residual Adds, global pooling) on
Fashion-MNIST at 32x32, compressed end to end like examples/mobilenet_v2.py.

Usage:  python examples/resnet.py [--depth 20] [--output_dir runs/resnet20] [--epochs 15] [--prune_epochs 9]
        [--cluster_epochs 3] [--bits 4] [--train_examples N]
Prints the README row (file ratio, dense and compressed accuracy, latencies).
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from _real_networks import arguments, compress  # noqa: E402  (examples/_real_networks.py)

from dc_keras import models  # noqa: E402


def main():
    depth = 20
    if "--depth" in sys.argv:  # taken off before the shared arguments are parsed
        at = sys.argv.index("--depth")
        depth = int(sys.argv[at + 1])
        del sys.argv[at:at + 2]
    args = arguments(__doc__.splitlines()[0], epochs=15, prune_epochs=9, cluster_epochs=3,
                     output_dir=f"runs/resnet{depth}")
    compress(models.resnet(depth, name=f"resnet{depth}"), args)


if __name__ == "__main__":
    main()
