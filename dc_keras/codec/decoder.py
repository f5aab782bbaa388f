"""Pure-numpy reference decoder of the compressed weight format (independent of the C++ core).

It exists to pin the format down a second time: tests check that it and the C++ codec (ops/codec) agree byte for
byte, so a misreading of FORMAT.md in either one shows up as a disagreement.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from dc_keras.codec import huffman, rans
from dc_keras.codec.format import (CODER_HUFFMAN, CODER_RANS, CODER_RAW, CodecError, ParsedBlob, StreamSection,
                                   block_grid, matrix_dims, parse)


def _decode_raw(data: bytes, section: StreamSection) -> np.ndarray:
    nbytes = section.payload_bytes
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=section.payload_start))
    used = section.count * section.width
    if bits[used:].any():
        raise CodecError(f"corrupt blob: nonzero padding bits after the raw {section.name} stream")
    weights = (1 << np.arange(section.width - 1, -1, -1)).astype(np.int64)
    symbols = bits[:used].reshape(section.count, section.width).astype(np.int64) @ weights
    return symbols.astype(np.uint8)


def _decode_section(data: bytes, section: Optional[StreamSection]) -> np.ndarray:
    if section is None:
        return np.zeros(0, dtype=np.uint8)
    if section.coder == CODER_RAW:
        symbols = _decode_raw(data, section)
    elif section.coder == CODER_HUFFMAN:
        symbols = huffman.decode(data, section)
    else:
        assert section.coder == CODER_RANS
        symbols = rans.decode(data, section)
    if len(symbols) and int(symbols.max()) >= section.alphabet:
        raise CodecError(f"corrupt blob: {section.name} stream symbol {int(symbols.max())} outside its alphabet "
                         f"of {section.alphabet}")
    return symbols


def _streams(parsed: ParsedBlob) -> Tuple[np.ndarray, np.ndarray]:
    return _decode_section(parsed.data, parsed.delta), _decode_section(parsed.data, parsed.code)


def decode_streams(blob) -> Tuple[np.ndarray, np.ndarray]:
    """The two symbol streams exactly as stored: (relative indices, codebook indices), both uint8.

    The relative-index stream is empty in dense layout; its 0 symbols are fillers of 2^index_bits - 1.
    """
    return _streams(parse(blob))


def decode(blob) -> np.ndarray:
    """Decodes a blob into a float32 array of its shape (pruned positions are +0.0).

    Raises:
      CodecError: the blob is malformed, corrupt, truncated or of an unsupported version.
    """
    parsed = parse(blob)
    info = parsed.info
    delta, code = _streams(parsed)
    out = np.zeros(info.num_elements, dtype=np.float32)
    if info.dense_layout:
        if info.num_elements:
            out[:] = parsed.codebook[code]
            nonzero = int(np.count_nonzero(out))
            if nonzero != info.num_nonzeros:
                raise CodecError(f"corrupt blob: dense layout decodes {nonzero} nonzeros, header says "
                                 f"{info.num_nonzeros}")
        return out.reshape(info.shape)
    if info.block_axis:
        return _decode_block_layout(parsed, delta, code)
    positions = _walk(info, delta, info.num_elements)
    if len(code) and int(code.max()) >= info.num_centroids:
        raise CodecError("corrupt blob: codebook index outside the codebook")
    out[positions] = parsed.codebook[code]
    return out.reshape(info.shape)


def _walk(info, delta: np.ndarray, cells: int) -> np.ndarray:
    """Positions the delta stream lists (cursor from -1, symbol 0 a filler of 2^index_bits - 1), checked
    against the header's count, the no-trailing-filler rule and the `cells` walked."""
    what = "blocks" if info.block_axis else "nonzeros"
    step = (1 << info.index_bits) - 1
    real = delta != 0
    if int(real.sum()) != info.num_nonzeros:
        raise CodecError(f"corrupt blob: delta stream lists {int(real.sum())} {what}, header says "
                         f"{info.num_nonzeros}")
    if len(delta) and not real[-1]:
        raise CodecError("corrupt blob: delta stream ends with a filler")
    positions = np.cumsum(np.where(real, delta.astype(np.int64), step)) - 1
    positions = positions[real]
    if len(positions) and positions[-1] >= cells:
        where = f"the block grid of {cells} blocks" if info.block_axis else f"the tensor of {cells} elements"
        raise CodecError(f"corrupt blob: {what[:-1]} position {int(positions[-1])} outside {where}")
    return positions


def decode_blocks(blob) -> dict:
    """A block-layout blob's block form, as stored (mirrors dc::codec::BlockSparseMatrix): a dict with rows,
    cols, axis ("cols" or "rows"), block_len, group_ptr (offsets per grid row, in blocks), block_start (first
    column of each block), codes (block_len per block; past the matrix edge 0) and codebook.

    Raises:
      CodecError: the blob is malformed or has no block layout.
    """
    parsed = parse(blob)
    if not parsed.info.block_axis:
        raise CodecError("the blob has no block layout (it stores single weights)")
    delta, code = _streams(parsed)
    return _block_form(parsed, delta, code)


def _block_form(parsed: ParsedBlob, delta: np.ndarray, code: np.ndarray) -> dict:
    info = parsed.info
    L = info.block_len
    rows, cols = matrix_dims(info.shape)
    grid_rows, grid_cols = block_grid(info.shape, info.block_axis, L)
    cells = _walk(info, delta, grid_rows * grid_cols)
    groups, cell = np.divmod(cells, max(grid_cols, 1))
    starts = cell * L if info.block_axis == "cols" else cell
    codes = code.reshape(-1, L) if len(code) else np.zeros((0, L), np.uint8)
    # Positions past the matrix edge must hold code 0: one spelling per blob.
    inside = (cols - starts) if info.block_axis == "cols" else (rows - groups * L)
    past_edge = np.arange(L)[None, :] >= inside[:, None]
    if np.any(codes[past_edge] != 0):
        block = int(np.nonzero(np.any(past_edge & (codes != 0), axis=1))[0][0])
        edge_codes = codes[block][past_edge[block]]
        code = int(edge_codes[edge_codes != 0][0])
        raise CodecError(f"corrupt blob: block {block} has nonzero code {code} past the matrix edge")
    group_ptr = np.zeros(grid_rows + 1, np.int64)
    np.add.at(group_ptr, groups + 1, 1)
    return {"rows": rows, "cols": cols, "axis": info.block_axis, "block_len": L,
            "group_ptr": np.cumsum(group_ptr), "block_start": starts.astype(np.int64), "codes": codes,
            "codebook": parsed.codebook, "groups": groups}


def _decode_block_layout(parsed: ParsedBlob, delta: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Dense float32 of a block layout: every stored block's in-matrix weights from the codebook."""
    info = parsed.info
    form = _block_form(parsed, delta, code)
    rows, cols, L = form["rows"], form["cols"], info.block_len
    out = np.zeros((rows, cols), dtype=np.float32)
    offsets = np.arange(L)
    if info.block_axis == "cols":
        r = np.repeat(form["groups"], L)
        c = (form["block_start"][:, None] + offsets[None, :]).reshape(-1)
    else:
        r = (form["groups"][:, None] * L + offsets[None, :]).reshape(-1)
        c = np.repeat(form["block_start"], L)
    values = form["codebook"][form["codes"].reshape(-1)] if len(r) else np.zeros(0, np.float32)
    keep = (r < rows) & (c < cols)
    out[r[keep], c[keep]] = values[keep]
    return out.reshape(info.shape)
