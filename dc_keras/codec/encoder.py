"""Encoder of the compressed weight format (ops/codec/FORMAT.md).

Everything is vectorised: nonzero positions, relative indices with fillers, codebook indices and the
Huffman bit packing are numpy array operations; layout and coder choices are made from histograms
(exact sizes for Huffman and raw, a tight estimate for rANS) so only the chosen encoding is produced.
"""
from __future__ import annotations

import numpy as np

from dc_keras import limits
from dc_keras.codec import huffman, rans
from dc_keras.codec.format import (BLOCK_AXIS_IDS, BLOCK_AXIS_SHIFT, BLOCK_LENGTHS, CODER_HUFFMAN, CODER_RANS,
                                   CODER_RAW, FLAG_DENSE, FLAG_FP16, MAX_ELEMENTS, MAX_RANK, assemble, matrix_dims,
                                   write_varint)

_CODERS = ("huffman", "rans", "raw", "auto")
_LAYOUTS = ("auto", "sparse", "dense")

BLOCK_MIN_FILL = 0.9
"""block="auto" takes a block shape only when at least this fraction of the stored blocks' weights (inside
the matrix) is nonzero: the weights were pruned in such blocks, not merely scattered."""


def _raw_pack(symbols: np.ndarray, width: int) -> bytes:
    return huffman.pack_codes(symbols, np.full(len(symbols), width, dtype=np.int64))


def _codebook(values: np.ndarray):
    """(sorted distinct values, index of each value): O(n log k) via searchsorted on candidates.

    Clustered weights have few distinct values, so candidates from a prefix, completed with whatever
    they miss, avoid sorting all n values; np.unique remains the fallback for unclustered input.
    """
    candidates = np.unique(values[:65536])
    for _ in range(2):
        if len(candidates) > 4096:
            break
        idx = np.minimum(np.searchsorted(candidates, values), max(len(candidates) - 1, 0))
        missing = candidates[idx] != values if len(candidates) else np.ones(len(values), bool)
        if not missing.any():
            return candidates, idx
        candidates = np.union1d(candidates, values[missing])
    codebook, codes = np.unique(values, return_inverse=True)
    return codebook, codes.reshape(-1)


def fillers_before(zero_runs: np.ndarray, index_bits: int) -> np.ndarray:
    """Filler entries the sparse layout needs before a nonzero preceded by `zero_runs` zeros (FORMAT.md:
    a filler advances by M = 2^index_bits - 1, so a run of z zeros needs z // M of them)."""
    return np.asarray(zero_runs) // ((1 << int(index_bits)) - 1)


def _relative_indices(positions: np.ndarray, index_bits: int) -> np.ndarray:
    """Delta stream: per nonzero, fillers (0) while the gap exceeds M = 2^index_bits - 1, then the rest."""
    step = (1 << index_bits) - 1
    gaps = np.diff(positions, prepend=-1)
    fillers = fillers_before(gaps - 1, index_bits)
    out = np.zeros(len(positions) + int(fillers.sum()), dtype=np.uint8)
    out[np.cumsum(fillers + 1) - 1] = gaps - fillers * step
    return out


def _stream_plan(symbols: np.ndarray, hist: np.ndarray, alphabet: int, width: int, coder: str):
    """(coder id, estimated bytes) for one stream; "auto" picks the smallest."""
    count = len(symbols)
    raw_size = (count * width + 7) // 8
    if coder == "raw":
        return CODER_RAW, raw_size
    if coder == "huffman":
        return CODER_HUFFMAN, huffman.section_size(symbols, hist)
    if coder == "rans":
        return CODER_RANS, rans.plan(hist, count)[2]
    options = [(raw_size, CODER_RAW), (huffman.section_size(symbols, hist), CODER_HUFFMAN)]
    options.append((rans.plan(hist, count)[2], CODER_RANS))
    size, ident = min(options)
    return ident, size


def _encode_stream(symbols: np.ndarray, alphabet: int, width: int, coder: int, auto: bool) -> tuple:
    """Section bytes for `symbols`; under "auto", an rANS choice made on an estimate is checked."""
    if len(symbols) == 0:
        return coder, b""
    if coder == CODER_RAW:
        return coder, _raw_pack(symbols, width)
    if coder == CODER_HUFFMAN:
        return coder, huffman.encode(symbols, alphabet)
    section = rans.encode(symbols, alphabet)
    if auto:
        hist = np.bincount(symbols, minlength=alphabet)
        alternatives = [(huffman.section_size(symbols, hist), CODER_HUFFMAN),
                        ((len(symbols) * width + 7) // 8, CODER_RAW)]
        size, ident = min(alternatives)
        if size < len(section):
            return _encode_stream(symbols, alphabet, width, ident, auto=False)
    return coder, section


def encode(weights, bits: int = 5, index_bits: int = 5, coder: str = "huffman",
           codebook_dtype: str = "float32", layout: str = "auto", block=None) -> bytes:
    """Encodes a pruned, weight-shared tensor into one blob.

    Args:
      weights: array-like of real numbers (stored as float32) with at most 2^bits distinct nonzero values;
        exact zeros are pruned positions.
      bits: codebook index width, 1..8 (the paper: 8 for conv, 5 for FC layers).
      index_bits: relative index width, 2..8 (dc_keras.limits; the paper: 8 for conv, 5 for FC layers); gaps longer than
        2^index_bits - 1 cost filler entries.
      coder: entropy coder of both index streams: "huffman" (the paper's), "rans" (closer to the entropy),
        "raw" (fixed width) or "auto" (the smallest per stream).
      codebook_dtype: "float32" (exact) or "float16" (centroids rounded to half precision).
      layout: "sparse" (relative indices + codes of nonzeros), "dense" (a code for every position, zero
        being a codebook value) or "auto" (whichever is smaller).
      block: None (single weights, as `layout` says), ("cols" | "rows", L) with L in 4, 8, 16, or "auto".
        A block layout stores whole aligned blocks of L weights of the 2-D view [shape[0], prod(shape[1:])]:
        "cols" blocks are L consecutive columns of one row (for an FC weight stored [out, in]: L consecutive
        inputs of one output), "rows" blocks L consecutive rows of one column. Every block holding a nonzero
        is stored whole; a zero inside it becomes a codebook entry (which needs a free slot of the 2^bits).
        "auto" picks the first of L = 16, 8, 4 ("cols" before "rows") whose stored blocks are at least
        BLOCK_MIN_FILL nonzero and keeps it when the blob is not larger than without blocks. Not with
        layout="dense".

    Returns:
      The blob (bytes).

    Raises:
      ValueError: invalid arguments, non-finite weights, too many distinct values for `bits` (in a block
        layout: counting zero when a stored block holds one), a tensor too large for the format, or float16
        overflow.
    """
    _check_arguments(bits, index_bits, coder, codebook_dtype, layout)
    block = _check_block(block, layout)
    bits, index_bits = int(bits), int(index_bits)
    fp16 = codebook_dtype == "float16"
    array = _weights_array(weights)
    if isinstance(block, tuple):
        return _encode_block(array, block[0], block[1], bits, index_bits, coder, fp16)
    blob = _encode_elementwise(array, bits, index_bits, coder, fp16, layout)
    if block == "auto":
        shape = detect_block(array.reshape(matrix_dims(array.shape)))
        if shape is not None:
            try:
                candidate = _encode_block(array, shape[0], shape[1], bits, index_bits, coder, fp16)
            except ValueError:  # no codebook slot left for the zeros inside the blocks
                return blob
            if len(candidate) <= len(blob):
                return candidate
    return blob


def _encode_elementwise(array: np.ndarray, bits: int, index_bits: int, coder: str, fp16: bool,
                        layout: str) -> bytes:
    """The sparse- or dense-layout blob of `array` (encode without blocks)."""
    auto_coder = coder == "auto"
    flat = array.reshape(-1)
    positions = np.flatnonzero(flat)
    codebook, codes = _shared_values(flat[positions], bits, fp16)
    n_elements = flat.size

    # Sparse layout plan.
    delta = _relative_indices(positions, index_bits)
    delta_hist = np.bincount(delta, minlength=1 << index_bits)
    code_hist = np.bincount(codes, minlength=len(codebook)) if len(codebook) else np.zeros(0, np.int64)
    sparse_delta = _stream_plan(delta, delta_hist, 1 << index_bits, index_bits, coder) if len(delta) else (0, 0)
    sparse_code = _stream_plan(codes, code_hist, len(codebook), bits, coder) if len(codes) else (0, 0)
    sparse_cost = sparse_delta[1] + sparse_code[1] + len(write_varint(len(delta)))

    if _use_dense(layout, codebook, code_hist, n_elements, bits, coder, fp16, sparse_cost):
        codebook, flags, widths, counts, sections = _dense_sections(codebook, codes, positions, n_elements, bits,
                                                                    coder, fp16, auto_coder)
    else:
        delta_coder, delta_section = _encode_stream(delta, 1 << index_bits, index_bits, sparse_delta[0], auto_coder)
        code_coder, code_section = _encode_stream(codes.astype(np.uint8), len(codebook), bits, sparse_code[0],
                                                  auto_coder)
        flags = (code_coder << 2) | (delta_coder << 4)
        widths = bits | (index_bits << 4)
        counts = write_varint(len(codebook)) + write_varint(len(positions)) + write_varint(len(delta))
        sections = delta_section + code_section
    return _blob(flags, array.shape, widths, counts, codebook, sections, fp16)


def _blob(flags: int, shape, widths: int, counts: bytes, codebook: np.ndarray, sections: bytes, fp16: bool,
          block_len: int = 0) -> bytes:
    """Assembles the body (flags, block length in a block layout, shape, widths, counts, codebook, streams)
    and its container."""
    flags |= FLAG_FP16 if fp16 else 0
    body = bytearray([flags])
    if block_len:
        body.append(block_len)
    body.append(len(shape))
    for dim in shape:
        body += write_varint(dim)
    body.append(widths)
    body += counts
    body += codebook.astype("<f2" if fp16 else "<f4").tobytes()
    body += sections
    return assemble(bytes(body))


def _check_block(block, layout: str):
    """`block` normalised to None, "auto" or (axis, L); ValueError naming what is wrong with it."""
    if block is None or (isinstance(block, str) and block == "auto"):
        if block == "auto" and layout == "dense":
            raise ValueError('block="auto" cannot be combined with layout="dense"')
        return block
    if isinstance(block, (tuple, list)) and len(block) == 2:
        axis, length = block
        if axis not in BLOCK_AXIS_IDS:
            raise ValueError(f"block axis must be 'cols' or 'rows', got {axis!r}")
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or int(length) not in BLOCK_LENGTHS:
            raise ValueError(f"block length must be one of {BLOCK_LENGTHS}, got {length!r}")
        if layout == "dense":
            raise ValueError("a block layout cannot be combined with layout='dense'")
        return str(axis), int(length)
    raise ValueError(f"block must be None, 'auto' or (axis, length) such as ('cols', 16), got {block!r}")


def block_cells(matrix: np.ndarray, axis: str, block_len: int) -> tuple:
    """(values, inside) of the aligned blocks of a 2-D matrix, both shaped (grid rows, grid cols, L) in the
    block grid's C order: each block's L weights (0 past the matrix edge) and which of them lie inside it."""
    rows, cols = matrix.shape
    L = int(block_len)
    if axis == "cols":
        width = -(-cols // L) * L
        values = np.zeros((rows, width), np.float32)
        inside = np.zeros((rows, width), bool)
        values[:, :cols], inside[:, :cols] = matrix, True
        return values.reshape(rows, width // L, L), inside.reshape(rows, width // L, L)
    height = -(-rows // L) * L
    values = np.zeros((height, cols), np.float32)
    inside = np.zeros((height, cols), bool)
    values[:rows], inside[:rows] = matrix, True
    return (values.reshape(height // L, L, cols).transpose(0, 2, 1),
            inside.reshape(height // L, L, cols).transpose(0, 2, 1))


def detect_block(matrix: np.ndarray, min_fill: float = BLOCK_MIN_FILL):
    """(axis, L) of the longest aligned block shape (L = 16, 8, 4; "cols" before "rows") whose blocks holding
    a nonzero are at least `min_fill` nonzero inside the matrix, or None (no nonzero, or no such shape)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    nonzero = int(np.count_nonzero(matrix))
    if matrix.ndim != 2 or nonzero == 0:
        return None
    for length in BLOCK_LENGTHS[::-1]:
        for axis in ("cols", "rows"):
            values, inside = block_cells(matrix, axis, length)
            stored = np.any(values != 0, axis=2)
            if nonzero >= min_fill * int(inside[stored].sum()):
                return axis, length
    return None


def block_stats(matrix: np.ndarray, axis: str, block_len: int) -> tuple:
    """(stored blocks, fillers at `index_bits` of each of 2..8 as a dict, whether a zero lies inside a stored
    block) of a 2-D matrix in a block layout: what its size depends on besides the codes."""
    values, inside = block_cells(np.asarray(matrix, np.float32), axis, block_len)
    stored = np.any(values != 0, axis=2)
    cells = np.flatnonzero(stored)
    gaps = np.diff(cells, prepend=-1) - 1
    fillers = {ib: int(np.sum(fillers_before(gaps, ib))) for ib in range(2, 9)}
    zero_inside = bool(np.any((values[stored] == 0) & inside[stored]))
    return len(cells), fillers, zero_inside


def _encode_block(array: np.ndarray, axis: str, block_len: int, bits: int, index_bits: int, coder: str,
                  fp16: bool) -> bytes:
    """The block-layout blob of `array`: every aligned block holding a nonzero, L codes each (0 past the
    matrix edge), zero joining the codebook when a stored block holds one."""
    auto_coder = coder == "auto"
    matrix = array.reshape(matrix_dims(array.shape))
    values, inside = block_cells(matrix, axis, block_len)
    values, inside = values.reshape(-1, block_len), inside.reshape(-1, block_len)
    cells = np.flatnonzero(np.any(values != 0, axis=1))
    stored, stored_inside = values[cells], inside[cells]
    codebook, _ = _shared_values(matrix[matrix != 0], bits, fp16)
    if np.any((stored == 0) & stored_inside):
        if len(codebook) >= 1 << bits:
            raise ValueError(f"a block layout needs a codebook slot for the zeros inside its blocks, but the "
                             f"{len(codebook)} distinct nonzero values already fill 2^bits = {1 << bits}")
        codebook = np.insert(codebook, int(np.searchsorted(codebook, 0.0)), 0.0).astype(np.float32)
    codes = np.searchsorted(codebook, stored).astype(np.uint8) if len(codebook) else np.zeros(stored.shape, np.uint8)
    codes[~stored_inside] = 0
    codes = codes.reshape(-1)
    delta = _relative_indices(cells, index_bits)
    delta_plan = _stream_plan(delta, np.bincount(delta, minlength=1 << index_bits), 1 << index_bits, index_bits,
                              coder)[0] if len(delta) else 0
    code_plan = _stream_plan(codes, np.bincount(codes, minlength=len(codebook)), len(codebook), bits,
                             coder)[0] if len(codes) else 0
    delta_coder, delta_section = _encode_stream(delta, 1 << index_bits, index_bits, delta_plan, auto_coder)
    code_coder, code_section = _encode_stream(codes, len(codebook), bits, code_plan, auto_coder)
    flags = (code_coder << 2) | (delta_coder << 4) | (BLOCK_AXIS_IDS[axis] << BLOCK_AXIS_SHIFT)
    counts = write_varint(len(codebook)) + write_varint(len(cells)) + write_varint(len(delta))
    return _blob(flags, array.shape, bits | (index_bits << 4), counts, codebook, delta_section + code_section,
                 fp16, block_len)


def smallest_index_bits(weights, coder: str = "huffman", candidates=None) -> int:
    """The relative index width (of `candidates`, default every width the format allows) whose sparse-layout
    index stream is smallest for `weights` under `coder`; exact for "huffman" and "raw". Narrow widths
    cost filler entries on long gaps, wide ones bits on every entry, and which wins depends on the layer's
    density and on how its nonzeros cluster, so it is measured rather than assumed. Ties go to the
    smaller width."""
    if coder not in _CODERS:
        raise ValueError(f"coder must be one of {_CODERS}, got {coder!r}")
    candidates = list(range(limits.MIN_INDEX_BITS, limits.MAX_INDEX_BITS + 1)) if candidates is None \
        else [int(c) for c in candidates]
    if not candidates:
        raise ValueError("smallest_index_bits needs at least one candidate width")
    for width in candidates:
        limits.check_index_bits(width)
    positions = np.flatnonzero(_weights_array(weights).reshape(-1))
    best = None
    for width in sorted(candidates):
        delta = _relative_indices(positions, width)
        size = (_stream_plan(delta, np.bincount(delta, minlength=1 << width), 1 << width, width, coder)[1]
                if len(delta) else 0) + len(write_varint(len(delta)))
        if best is None or size < best[0]:
            best = (size, width)
    return best[1]


def _check_arguments(bits, index_bits, coder: str, codebook_dtype: str, layout: str) -> None:
    """ValueError naming the first of encode's options that is out of range."""
    limits.check_bits(bits)
    limits.check_index_bits(index_bits)
    if coder not in _CODERS:
        raise ValueError(f"coder must be one of {_CODERS}, got {coder!r}")
    if codebook_dtype not in ("float32", "float16"):
        raise ValueError(f"codebook_dtype must be 'float32' or 'float16', got {codebook_dtype!r}")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")


def _weights_array(weights) -> np.ndarray:
    """`weights` as a C-ordered float32 array, or ValueError when they are not real numbers or exceed the
    format's rank or element count."""
    array = np.asarray(weights)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"weights must be real numbers, got dtype {array.dtype}")
    array = np.asarray(array, dtype=np.float32, order="C")
    if array.ndim > MAX_RANK:
        raise ValueError(f"weights of rank {array.ndim} exceed the format's maximum rank {MAX_RANK}")
    if array.size > MAX_ELEMENTS:
        raise ValueError(f"weights with {array.size} elements exceed the format's maximum of {MAX_ELEMENTS}")
    return array


def _shared_values(values: np.ndarray, bits: int, fp16: bool) -> tuple:
    """(codebook, codes) of the nonzero `values`; ValueError for non-finite values, more distinct values than
    2^bits, or (fp16) a centroid that overflows float16."""
    if not np.all(np.isfinite(values)):
        raise ValueError("weights contain NaN or infinite values")
    codebook, codes = _codebook(values)
    if len(codebook) > 1 << bits:
        raise ValueError(f"weights have {len(codebook)} distinct nonzero values, more than 2^bits = {1 << bits} "
                         f"(cluster them first or raise bits)")
    if fp16 and len(codebook) and np.max(np.abs(codebook)) > np.finfo(np.float16).max:
        raise ValueError(f"a centroid of magnitude {np.max(np.abs(codebook))} overflows float16")
    return codebook, codes


def _use_dense(layout: str, codebook, code_hist, n_elements: int, bits: int, coder: str, fp16: bool,
               sparse_cost: int) -> bool:
    """Whether to store the dense layout (zero joins the codebook, every position gets a code): as asked, or
    for "auto" when its estimated size beats the sparse plan's. ValueError when "dense" is asked but zero
    has no free codebook slot."""
    zeros = n_elements - int(code_hist.sum()) if len(code_hist) else n_elements
    dense_possible = zeros == 0 or len(codebook) < 1 << bits
    if layout == "dense" and not dense_possible:
        raise ValueError(f"dense layout needs a codebook slot for zero, but the {len(codebook)} distinct nonzero "
                         f"values already fill 2^bits = {1 << bits}")
    if layout != "auto":
        return layout == "dense"
    if not dense_possible or not n_elements:
        return False
    zero_slot = int(np.searchsorted(codebook, 0.0)) if zeros else -1
    dense_hist = np.insert(code_hist, zero_slot, zeros) if zeros else code_hist
    dense_k = len(dense_hist)
    # Histogram-only estimate (the symbols themselves are not built unless dense is chosen).
    dense_cost = _dense_estimate(dense_hist, n_elements, dense_k, bits, coder)
    dense_cost += (2 if fp16 else 4) * (dense_k - len(codebook))
    return dense_cost < sparse_cost


def _dense_sections(codebook, codes, positions, n_elements: int, bits: int, coder: str, fp16: bool,
                    auto_coder: bool) -> tuple:
    """(codebook with zero inserted, flags, widths byte, counts, code section) of the dense layout."""
    zeros = n_elements - len(positions)
    zero_slot = int(np.searchsorted(codebook, 0.0)) if zeros else -1
    if zeros:
        codebook = np.insert(codebook, zero_slot, 0.0).astype(np.float32)
        dense_codes = np.full(n_elements, zero_slot, dtype=np.uint8)
        dense_codes[positions] = codes + (codes >= zero_slot)
    else:
        dense_codes = codes.astype(np.uint8)
    stored = codebook.astype(np.float16) if fp16 else codebook
    k = len(codebook)
    nnz = int(np.count_nonzero(stored[dense_codes])) if n_elements else 0
    code_coder = _stream_plan(dense_codes, np.bincount(dense_codes, minlength=k), k, bits, coder)[0] \
        if n_elements else 0
    code_coder, code_section = _encode_stream(dense_codes, k, bits, code_coder, auto_coder)
    return codebook, FLAG_DENSE | (code_coder << 2), bits, write_varint(k) + write_varint(nnz), code_section


def _dense_estimate(hist: np.ndarray, count: int, k: int, bits: int, coder: str) -> int:
    raw_size = (count * bits + 7) // 8
    if coder == "raw":
        return raw_size
    lengths = huffman.code_lengths(hist)
    huff_size = int(np.sum(hist * lengths) + 7) // 8 + len(huffman.write_lengths(lengths)) + 8
    if coder == "huffman":
        return huff_size
    rans_size = rans.plan(hist, count)[2]
    if coder == "rans":
        return rans_size
    return min(raw_size, huff_size, rans_size)
