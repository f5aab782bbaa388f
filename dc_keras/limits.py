"""The valid ranges of dc_keras's compression settings and stored tensors, defined once.

Every stage checks against these numbers: CompressionConfig (and so dc-compress's --bits / --index_bits),
cluster_weights, compression_report, the codec's encoder and parser, export_tflite, compress_model and
dc-inspect. The C++ readers state the same limits (ops/codec/FORMAT.md, ops/codec/dc_codec.h, the TF op's
kMaxDenseElements in ops/tf/dc_tf_ops.cc); a change here needs a change there.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

MIN_BITS, MAX_BITS = 1, 8
"""Codebook index width a blob stores (2..256 shared values): the `bits` nibble of the format."""

MIN_INDEX_BITS, MAX_INDEX_BITS = 2, 8
"""Relative sparse index width a blob stores (FORMAT.md): with 1 bit a gap of g positions costs g entries,
and the readers hold relative indices in bytes."""

MAX_CLUSTERING_BITS = 16
"""Widest codebook cluster_weights trains (Keras-side studies of accuracy against bits); files hold at most
MAX_BITS, so the pipeline and the exporter accept only MIN_BITS..MAX_BITS."""

def bits_for_values(count: int) -> int:
    """Codebook index bits that address `count` shared values: ceil(log2 count), at least 1. The one rule
    by which clustering, its size report and the exporter choose bits when none are given."""
    return max(1, math.ceil(math.log2(max(int(count), 1))))


MAX_BLOB_ELEMENTS = 2**32 - 1
"""Largest prod(shape) a blob header may declare (FORMAT.md)."""

MAX_DECODED_ELEMENTS = 2**31
"""Largest tensor dc_keras accepts for decoding: the TF op refuses more (8 GiB of floats), and dc-inspect
calls such a layer invalid, as the delegate's mode=dense would try to allocate all of it."""


def is_int(value: Any) -> bool:
    """True for Python and NumPy integers, False for bools (True is not a bit width)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def bits_ok(value: Any) -> bool:
    """True when `value` is a storable codebook index width."""
    return is_int(value) and MIN_BITS <= value <= MAX_BITS


def index_bits_ok(value: Any) -> bool:
    """True when `value` is a storable relative index width."""
    return is_int(value) and MIN_INDEX_BITS <= value <= MAX_INDEX_BITS


BITS_RANGE = f"an integer in {MIN_BITS}..{MAX_BITS}"
INDEX_BITS_RANGE = f"an integer in {MIN_INDEX_BITS}..{MAX_INDEX_BITS}"


def check_bits(value: Any, name: str = "bits") -> int:
    """`value` as an int, or ValueError "<name> must be an integer in 1..8, got ..."."""
    if not bits_ok(value):
        raise ValueError(f"{name} must be {BITS_RANGE}, got {value!r}")
    return int(value)


def check_index_bits(value: Any, name: str = "index_bits") -> int:
    """`value` as an int, or ValueError "<name> must be an integer in 2..8, got ..."."""
    if not index_bits_ok(value):
        raise ValueError(f"{name} must be {INDEX_BITS_RANGE}, got {value!r}")
    return int(value)
