"""Deep Compression's Table 3 (LeNet-5, Caffe variant) reproduced in structure on Fashion-MNIST, end to end.

    python examples/lenet5.py [--output_dir runs/table3] [--epochs_scale 0.3 --train_examples 10000]

Same stages as examples/lenet_300_100.py on conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10; the conv
layers become DcConv2D ops in the exported file.
"""
import sys

from _paper_table import reproduce

if __name__ == "__main__":
    sys.exit(reproduce("lenet5", "Table 3", "runs/table3_lenet5"))
