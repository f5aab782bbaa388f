"""Deep Compression's Table 2 (LeNet-300-100) reproduced in structure on Fashion-MNIST, end to end.

    python examples/lenet_300_100.py [--output_dir runs/table2] [--epochs_scale 0.3 --train_examples 10000]

Trains the dense network, prunes it iteratively with retraining, shares weights (k-means codebooks, centroid
fine-tuning), exports a Huffman-coded .tflite, verifies it through the dc delegate and prints the per-layer
table; exits 1 if the compressed file loses more than 0.5 points against the dense one.
"""
import sys

from _paper_table import reproduce

if __name__ == "__main__":
    sys.exit(reproduce("lenet300", "Table 2", "runs/table2_lenet_300_100"))
