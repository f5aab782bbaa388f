"""Canonical, length-limited Huffman coding of a symbol stream (FORMAT.md, coder 1).

Code lengths come from package-merge, which is optimal under the 12-bit limit (the limit lets decoders
use a single 4096-entry table). Packing and the reference decoder are vectorised with numpy: the only
Python-level loop in decoding follows the chain of code boundaries, one step per symbol.
"""
from __future__ import annotations

from typing import List

import numpy as np

from dc_keras.codec.format import (MAX_HUFFMAN_BITS, BitWriter, CodecError, StreamSection, write_varint)

LANE_THRESHOLD = 8192
"""Streams with at least this many symbols are split into 4 lanes (independent bit readers in C++)."""
DEFAULT_LANES = 4


def code_lengths(hist: np.ndarray, limit: int = MAX_HUFFMAN_BITS) -> np.ndarray:
    """Optimal prefix-code lengths for `hist` with no code longer than `limit` (package-merge).

    Symbols with zero count get length 0; a single used symbol gets length 1.
    """
    hist = np.asarray(hist, dtype=np.int64)
    lengths = np.zeros(len(hist), dtype=np.int64)
    used = np.flatnonzero(hist)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    if len(used) > 1 << limit:
        raise ValueError(f"{len(used)} symbols cannot be coded with codes of at most {limit} bits")
    # Items are (weight, node); a node is a symbol (int) or a pair of nodes (a package).
    order = sorted(used.tolist(), key=lambda s: (hist[s], s))
    leaves = [(int(hist[s]), s) for s in order]
    current = leaves
    for _ in range(limit - 1):
        packages = [(current[i][0] + current[i + 1][0], (current[i][1], current[i + 1][1]))
                    for i in range(0, len(current) - 1, 2)]
        merged, i, j = [], 0, 0
        while i < len(leaves) or j < len(packages):
            if j == len(packages) or (i < len(leaves) and leaves[i][0] <= packages[j][0]):
                merged.append(leaves[i])
                i += 1
            else:
                merged.append(packages[j])
                j += 1
        current = merged
    stack = [node for _, node in current[:2 * len(used) - 2]]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):
            stack.extend(node)
        else:
            lengths[node] += 1
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values (MSB-first, `lengths[s]` bits) for each symbol; 0 for unused symbols."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev_len = 0, 0
    for symbol in sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - prev_len
        prev_len = int(lengths[symbol])
        codes[symbol] = code
        code += 1
    return codes


def write_lengths(lengths: np.ndarray) -> bytes:
    """Bit-packed code lengths: each relative to the previous (0 same, 10 +1, 110 -1, 111 + 4-bit literal)."""
    writer = BitWriter()
    prev = 0
    for length in lengths.tolist():
        if length == prev:
            writer.write(0, 1)
        elif length == prev + 1:
            writer.write(0b10, 2)
        elif length == prev - 1:
            writer.write(0b110, 3)
        else:
            writer.write(0b111, 3)
            writer.write(length, 4)
        prev = length
    return writer.getvalue()


def _lane_bounds(count: int, lanes: int) -> List[int]:
    per_lane = -(-count // lanes) if count else 0
    return [min(count, j * per_lane) for j in range(lanes + 1)]


def choose_lanes(count: int) -> int:
    """Lane count the encoder uses for a stream of `count` symbols."""
    return DEFAULT_LANES if count >= LANE_THRESHOLD else 1


def _section_prefix(lengths: np.ndarray, lane_sizes: List[int]) -> bytes:
    out = write_lengths(lengths) + write_varint(len(lane_sizes)) + write_varint(sum(lane_sizes))
    for size in lane_sizes[:-1]:
        out += write_varint(size)
    return out


def section_size(symbols: np.ndarray, hist: np.ndarray) -> int:
    """Exact byte size of the Huffman section `encode` would produce, without packing any bits."""
    lengths = code_lengths(hist)
    bounds = _lane_bounds(len(symbols), choose_lanes(len(symbols)))
    bit_cost = np.cumsum(lengths[symbols], dtype=np.int64)
    ends = [int(bit_cost[b - 1]) if b else 0 for b in bounds]
    lane_sizes = [(ends[j + 1] - ends[j] + 7) // 8 for j in range(len(bounds) - 1)]
    return len(_section_prefix(lengths, lane_sizes)) + sum(lane_sizes)


def pack_codes(codes: np.ndarray, lengths: np.ndarray) -> bytes:
    """Concatenates variable-length codes (<= 12 bits, MSB first) into zero-padded bytes.

    Each code, shifted to its bit offset, lies within the 3 bytes starting at its first byte; codes
    never share bits, so the bytes are the sums of the codes' contributions (three bincounts).
    """
    if len(codes) == 0:
        return b""
    lengths = lengths.astype(np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    nbytes = (int(ends[-1]) + 7) // 8
    window = codes.astype(np.int64) << (24 - (starts & 7) - lengths)
    first = starts >> 3
    out = np.zeros(nbytes + 2, dtype=np.float64)
    for k in range(3):
        out += np.bincount(first + k, weights=(window >> (16 - 8 * k)) & 0xFF, minlength=nbytes + 2)
    return out[:nbytes].astype(np.uint8).tobytes()


def encode(symbols: np.ndarray, alphabet: int) -> bytes:
    """Huffman section for `symbols` (uint8 values < alphabet): table, lanes, payload."""
    symbols = np.asarray(symbols, dtype=np.int64)
    hist = np.bincount(symbols, minlength=alphabet)
    lengths = code_lengths(hist)
    codes = canonical_codes(lengths)
    bounds = _lane_bounds(len(symbols), choose_lanes(len(symbols)))
    sym_codes, sym_lengths = codes[symbols], lengths[symbols]
    lanes = [pack_codes(sym_codes[a:b], sym_lengths[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return _section_prefix(lengths, [len(lane) for lane in lanes]) + b"".join(lanes)


def decode_table(lengths: np.ndarray):
    """(symbol, length) for every 12-bit window: the first code the window starts with; length 0 = invalid."""
    size = 1 << MAX_HUFFMAN_BITS
    table_sym = np.zeros(size, dtype=np.int64)
    table_len = np.zeros(size, dtype=np.int64)
    codes = canonical_codes(lengths)
    for symbol in np.flatnonzero(lengths).tolist():
        length = int(lengths[symbol])
        first = int(codes[symbol]) << (MAX_HUFFMAN_BITS - length)
        table_sym[first:first + (1 << (MAX_HUFFMAN_BITS - length))] = symbol
        table_len[first:first + (1 << (MAX_HUFFMAN_BITS - length))] = length
    return table_sym, table_len


def decode(data: bytes, section: StreamSection) -> np.ndarray:
    """Reference decoder of a parsed Huffman section; returns `section.count` symbols as uint8."""
    table_sym, table_len = decode_table(section.lengths)
    out = np.empty(section.count, dtype=np.uint8)
    bounds = _lane_bounds(section.count, section.lanes)
    offset = section.payload_start
    for lane, lane_size in enumerate(section.lane_sizes):
        lane_bytes = np.frombuffer(data, dtype=np.uint8, count=lane_size, offset=offset)
        offset += lane_size
        first, last = bounds[lane], bounds[lane + 1]
        nbits = lane_size * 8
        bits = np.concatenate([np.unpackbits(lane_bytes), np.zeros(MAX_HUFFMAN_BITS, np.uint8)])
        # The 12-bit window starting at every bit position, computed for all positions at once.
        windows = np.zeros(nbits + 1, dtype=np.int64)
        for j in range(MAX_HUFFMAN_BITS):
            windows = (windows << 1) | bits[j:j + nbits + 1]
        sym_at, len_at = table_sym[windows].tolist(), table_len[windows].tolist()
        pos, decoded = 0, []
        for _ in range(last - first):
            if pos >= nbits:
                raise CodecError(f"corrupt blob: {section.name} stream lane {lane} ends before its symbols")
            length = len_at[pos]
            if length == 0:
                raise CodecError(f"corrupt blob: invalid Huffman code in the {section.name} stream")
            decoded.append(sym_at[pos])
            pos += length
        if pos > nbits:
            raise CodecError(f"corrupt blob: {section.name} stream lane {lane} ends before its symbols")
        if (pos + 7) // 8 != lane_size or bits[pos:nbits].any():
            raise CodecError(f"corrupt blob: {section.name} stream lane {lane} has trailing bits or bytes")
        out[first:last] = decoded
    return out
