"""Block-structured pruning: whole ``(r, c)`` blocks of a kernel are pruned or kept together.

Orientation follows tfmot (``pruning_impl.Pruning._maybe_update_block_mask`` pools the rank-2 kernel with
``block_size[0]`` along axis 0 and ``block_size[1]`` along axis 1) on the Keras kernel layout:

* Dense kernels are ``(inputs, outputs)``: ``(16, 1)`` is 16 consecutive inputs of one output (contiguous in
  TFLite's ``(outputs, inputs)`` weight layout, what SIMD kernels want); ``(1, 16)`` is 16 consecutive outputs
  fed by one input.
* Conv1D/Conv2D kernels ``(k..., in_channels, out_channels)`` (tfmot rejects them) are blocked over their last
  two axes at every kernel tap: ``(16, 1)`` is 16 consecutive input channels of one output channel at one tap.
  All taps are ranked together, against one sparsity target for the whole kernel.
* DepthwiseConv2D, Conv2DTranspose (its last axes are ``(outputs, inputs)``) and Embedding take no blocks.

A block's score is the mean (``"AVG"``) or maximum (``"MAX"``) of its weights' magnitudes; blocks at the
lower/right edge of a dimension that is not a multiple of the block hold fewer weights and are scored over
those real weights only. Sparsity schedules then keep the highest-scoring blocks, in order, while the kept
weights stay within ``max(round(n * (1 - sparsity)), 1)`` (at least one block), so the layer's sparsity meets
the target and overshoots it by less than one block.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

__all__ = ["UNSTRUCTURED", "BlockLayout", "check_block_size", "check_pooling", "block_refusal"]

UNSTRUCTURED = (1, 1)
POOLING_TYPES = ("AVG", "MAX")


def check_block_size(block_size, owner: str = "block_size") -> Tuple[int, int]:
    """``block_size`` as a tuple of two positive ints; ValueError naming the problem otherwise."""
    if isinstance(block_size, (str, bytes)) or not hasattr(block_size, "__len__"):
        raise ValueError(f"{owner} must be a pair of positive integers (rows, columns) such as (16, 1), "
                         f"got {block_size!r}")
    if len(block_size) != 2:
        raise ValueError(f"{owner} must have 2 entries (rows, columns), got {len(block_size)}: {block_size!r}")
    for value in block_size:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{owner} entries must be integers, got {block_size!r}")
        if value < 1:
            raise ValueError(f"{owner} entries must be >= 1, got {block_size!r}")
    return int(block_size[0]), int(block_size[1])


def check_pooling(block_pooling_type) -> str:
    """``block_pooling_type`` if it is ``"AVG"`` or ``"MAX"``; ValueError otherwise."""
    if block_pooling_type not in POOLING_TYPES:
        raise ValueError(f"block_pooling_type must be 'AVG' or 'MAX', got {block_pooling_type!r}")
    return block_pooling_type


def block_refusal(layer) -> Optional[str]:
    """Why ``layer`` cannot be block-pruned (a sentence naming it), or None when it can.

    Layers with ``get_prunable_weights()`` are accepted here; their weights' ranks are checked when built.
    """
    kind = type(layer).__name__
    if hasattr(layer, "get_prunable_weights"):
        return None
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        reason = "its kernel has one filter per input channel, so there is no input/output matrix to block"
    elif isinstance(layer, keras.layers.Conv2DTranspose):
        reason = "its kernel's last axes are (outputs, inputs), the transpose of the other layers'"
    elif isinstance(layer, keras.layers.Embedding):
        reason = "its table is read by row lookups, not by a matrix product"
    else:
        return None
    return f"layer {layer.name!r} ({kind}) cannot be block-pruned: {reason}; use block_size=(1, 1) for it"


class BlockLayout:
    """How one weight tensor splits into blocks: a stack of ``batch`` matrices ``(rows, cols)`` (its last two
    axes; every leading axis is a kernel tap), each cut into ``(r, c)`` blocks aligned at row/column 0."""

    def __init__(self, shape, block_size, pooling: str = "AVG", name: str = "weight"):
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2:
            raise ValueError(f"{name}: block pruning needs a weight of rank >= 2 (a matrix, or a stack of them "
                             f"along leading axes), got shape {shape}; use block_size=(1, 1)")
        self.shape = shape
        self.block_size = check_block_size(block_size)
        self.pooling = check_pooling(pooling)
        self.batch = int(math.prod(shape[:-2]))
        self.rows, self.cols = shape[-2:]
        r, c = self.block_size
        self.row_blocks, self.col_blocks = -(-self.rows // r), -(-self.cols // c)
        # Weights per block: full blocks hold r * c, blocks at the bottom/right edge fewer.
        row_counts = np.minimum(r, self.rows - r * np.arange(self.row_blocks))
        col_counts = np.minimum(c, self.cols - c * np.arange(self.col_blocks))
        self.counts = np.tile(np.outer(row_counts, col_counts).reshape(-1), self.batch).astype(np.int64)

    @property
    def size(self) -> int:
        """Number of weights."""
        return int(math.prod(self.shape))

    def pool(self, weight) -> tf.Tensor:
        """Block scores, flat (float32, one per block, taps first then block rows then block columns): mean
        or max of ``|w|`` over each block's real weights."""
        r, c = self.block_size
        magnitude = tf.math.abs(tf.cast(tf.reshape(weight, (self.batch, self.rows, self.cols)), tf.float32))
        # Zero padding changes neither the sums (divided by the real counts below) nor the maxima (|w| >= 0).
        padded = tf.pad(magnitude, [[0, 0], [0, self.row_blocks * r - self.rows], [0, self.col_blocks * c - self.cols]])
        tiles = tf.reshape(padded, (self.batch, self.row_blocks, r, self.col_blocks, c))
        if self.pooling == "MAX":
            return tf.reshape(tf.math.reduce_max(tiles, axis=(2, 4)), [-1])
        sums = tf.reshape(tf.math.reduce_sum(tiles, axis=(2, 4)), [-1])
        return sums / tf.constant(self.counts, tf.float32)

    def expand(self, block_mask) -> tf.Tensor:
        """A per-weight mask shaped like the weight from a flat per-block mask (as :meth:`pool` orders them)."""
        r, c = self.block_size
        grid = tf.reshape(block_mask, (self.batch, self.row_blocks, self.col_blocks))
        full = tf.repeat(tf.repeat(grid, r, axis=1), c, axis=2)[:, :self.rows, :self.cols]
        return tf.reshape(full, self.shape)

    def keep_top(self, scores, sparsity) -> Tuple[tf.Tensor, tf.Tensor]:
        """``(threshold, per-weight mask)`` keeping the highest ``scores`` blocks while the kept weights stay
        within ``max(round(n * (1 - sparsity)), 1)``; at least one block. Ties go to the earlier block."""
        budget = tf.math.maximum(tf.math.round(tf.cast(self.size, tf.float32) * (1.0 - tf.cast(sparsity, tf.float32))),
                                 1.0)
        blocks = int(self.counts.size)
        values, order = tf.math.top_k(scores, k=blocks, sorted=True)  # equal scores: lower index first
        kept_weights = tf.math.cumsum(tf.gather(tf.constant(self.counts, tf.float32), order))
        keep_sorted = tf.math.logical_or(kept_weights <= budget, tf.range(blocks) == 0)
        kept = tf.math.reduce_sum(tf.cast(keep_sorted, tf.int32))
        threshold = values[kept - 1]
        block_mask = tf.scatter_nd(tf.expand_dims(order, 1), tf.cast(keep_sorted, tf.float32), (blocks,))
        return threshold, self.expand(block_mask)

    def keep_above(self, scores, threshold) -> tf.Tensor:
        """Per-weight mask keeping the blocks whose score is at least ``threshold``."""
        return self.expand(tf.cast(scores >= tf.cast(threshold, tf.float32), tf.float32))
