"""Blob sizes of a 784x300 FC layer (stored [300, 784]) at 92% sparsity: pruned in aligned blocks of 16 inputs
vs unstructured, 5-bit codebook (32 centroids), 5-bit relative indices, each stored with and without the
block layout (block="auto" falls back to the sparse layout when no block shape fits or pays).

    PYTHONPATH=. python benchmarks/block_layout_size.py
"""
from __future__ import annotations

import numpy as np

from dc_keras import codec

rng = np.random.default_rng(0)
centroids = np.sort(rng.normal(0, 0.05, 32)).astype(np.float32)
out_dim, in_dim, L = 300, 784, 16
values = rng.choice(centroids, size=(out_dim, in_dim))
block_mask = np.repeat(rng.random((out_dim, in_dim // L)) < 0.08, L, axis=1)
blocked = np.where(block_mask, values, 0).astype(np.float32)
scattered = np.where(rng.random((out_dim, in_dim)) < 0.08, values, 0).astype(np.float32)
for name, w in (("16-block pruned", blocked), ("unstructured pruned", scattered)):
    print(f"{name}: {np.count_nonzero(w)} nonzeros ({100 * np.count_nonzero(w) / w.size:.2f}%)")
    for coder in ("huffman", "raw"):
        plain = codec.encode(w, bits=5, index_bits=5, coder=coder, layout="sparse")
        auto = codec.encode(w, bits=5, index_bits=5, coder=coder, layout="sparse", block="auto")
        info = codec.parse_info(auto)
        print(f"  {coder:8s} sparse layout {len(plain):6d} B   block='auto' {len(auto):6d} B "
              f"({info.layout}{' ' + info.block_axis + ' x' + str(info.block_len) if info.block_axis else ''})")
