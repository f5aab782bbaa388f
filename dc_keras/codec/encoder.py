"""Encoder of the compressed weight format (ops/codec/FORMAT.md).

Everything is vectorised: nonzero positions, relative indices with fillers, codebook indices and the
Huffman bit packing are numpy array operations; layout and coder choices are made from histograms
(exact sizes for Huffman and raw, a tight estimate for rANS) so only the chosen encoding is produced.
"""
from __future__ import annotations

import numpy as np

from dc_keras import limits
from dc_keras.codec import huffman, rans
from dc_keras.codec.format import (CODER_HUFFMAN, CODER_RANS, CODER_RAW, FLAG_DENSE, FLAG_FP16,
                                   MAX_ELEMENTS, MAX_RANK, assemble, write_varint)

_CODERS = ("huffman", "rans", "raw", "auto")
_LAYOUTS = ("auto", "sparse", "dense")


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
           codebook_dtype: str = "float32", layout: str = "auto") -> bytes:
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

    Returns:
      The blob (bytes).

    Raises:
      ValueError: invalid arguments, non-finite weights, too many distinct values for `bits`, a tensor
        too large for the format, or float16 overflow.
    """
    _check_arguments(bits, index_bits, coder, codebook_dtype, layout)
    bits, index_bits = int(bits), int(index_bits)
    fp16, auto_coder = codebook_dtype == "float16", coder == "auto"
    array = _weights_array(weights)
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
    flags |= FLAG_FP16 if fp16 else 0
    body = bytearray([flags, array.ndim])
    for dim in array.shape:
        body += write_varint(dim)
    body.append(widths)
    body += counts
    body += codebook.astype("<f2" if fp16 else "<f4").tobytes()
    body += sections
    return assemble(bytes(body))


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
