"""Interleaved rANS coding of a symbol stream (FORMAT.md, coder 2).

32-bit states renormalised in 16-bit words, so a symbol emits at most one word; that keeps the encoder
branch-free enough to vectorise across lanes with numpy (symbol i belongs to lane i mod lanes). Lanes
cost 4 bytes each (the flushed state), so the encoder uses about one lane per 8K symbols (<= 0.05%),
at most 1024 (the format limit).
"""
from __future__ import annotations

import math

import numpy as np

from dc_keras.codec.format import (MAX_RANS_LANES, RANS_L, RANS_MAX_SCALE, BitWriter, CodecError, StreamSection,
                                   write_varint)

SYMBOLS_PER_LANE = 8192
MAX_ENCODER_LANES = 1024


def choose_lanes(count: int) -> int:
    """Lane count the encoder uses for a stream of `count` symbols."""
    return int(min(MAX_ENCODER_LANES, max(1, count // SYMBOLS_PER_LANE)))


def quantize(hist: np.ndarray, scale: int) -> np.ndarray:
    """Integer frequencies summing to 2^scale, >= 1 for every used symbol, near-minimal coded size.

    Starts from floor(p * 2^scale) and moves single units where they change the cost
    sum(count * -log2(f)) the least, which is optimal for this separable convex objective.
    """
    hist = np.asarray(hist, dtype=np.int64)
    total = 1 << scale
    used = hist > 0
    if used.sum() > total:
        raise ValueError(f"{int(used.sum())} symbols do not fit rANS scale {scale}")
    counts = hist.astype(np.float64)
    freqs = np.where(used, np.maximum(1, np.floor(counts / counts.sum() * total)), 0).astype(np.int64)
    while freqs.sum() != total:
        if freqs.sum() < total:
            gain = np.where(used, counts * np.log2((freqs + 1) / np.maximum(freqs, 1)), -np.inf)
            freqs[int(np.argmax(gain))] += 1
        else:
            can_drop = used & (freqs > 1)
            loss = np.where(can_drop, counts * np.log2(np.maximum(freqs, 2) / np.maximum(freqs - 1, 1)), np.inf)
            freqs[int(np.argmin(loss))] -= 1
    return freqs


def _gamma_bits(values: np.ndarray) -> int:
    values = np.asarray(values, dtype=np.int64) + 1
    return int(np.sum(2 * np.floor(np.log2(values)).astype(np.int64) + 1))


def write_freqs(freqs: np.ndarray) -> bytes:
    """Bit-packed frequencies: Elias gamma of f + 1 each."""
    writer = BitWriter()
    for f in freqs.tolist():
        n = f + 1
        width = n.bit_length()
        writer.write(0, width - 1)
        writer.write(n, width)
    return writer.getvalue()


def plan(hist: np.ndarray, count: int):
    """(scale, freqs, estimated section bytes) minimising the estimate over the allowed scales."""
    hist = np.asarray(hist, dtype=np.int64)
    used = int((hist > 0).sum())
    lanes = choose_lanes(count)
    fixed = 1 + len(write_varint(lanes)) + 4 * lanes + 3
    best = None
    for scale in range(max(1, math.ceil(math.log2(max(used, 1)))), RANS_MAX_SCALE + 1):
        freqs = quantize(hist, scale)
        nz = hist > 0
        payload_bits = float(np.sum(hist[nz] * (scale - np.log2(freqs[nz]))))
        size = fixed + (_gamma_bits(freqs) + 7) // 8 + 2 * math.ceil(payload_bits / 16)
        if best is None or size < best[2]:
            best = (scale, freqs, size)
    return best


def encode(symbols: np.ndarray, alphabet: int) -> bytes:
    """rANS section for `symbols` (values < alphabet): scale, frequencies, lanes, states and words."""
    symbols = np.asarray(symbols, dtype=np.int64)
    count = len(symbols)
    hist = np.bincount(symbols, minlength=alphabet)
    scale, freqs, _ = plan(hist, count)
    starts = np.concatenate([[0], np.cumsum(freqs)[:-1]]).astype(np.int64)
    lanes = choose_lanes(count)
    steps = -(-count // lanes)
    padded = np.zeros(steps * lanes, dtype=np.int64)
    padded[:count] = symbols
    grid = padded.reshape(steps, lanes)
    sym_freq, sym_start = freqs[grid], starts[grid]
    # Renormalise when x >= f * 2^(32 - scale), so that after encoding x stays below 2^32.
    sym_limit = sym_freq << (32 - scale)
    words = np.zeros((steps, lanes), dtype=np.uint16)
    emitted = np.zeros((steps, lanes), dtype=bool)
    state = np.full(lanes, RANS_L, dtype=np.int64)
    last_active = count - (steps - 1) * lanes
    for step in range(steps - 1, -1, -1):
        active = lanes if step < steps - 1 else last_active
        x = state[:active]
        f, limit = sym_freq[step, :active], sym_limit[step, :active]
        emit = x >= limit
        words[step, :active] = x & 0xFFFF
        emitted[step, :active] = emit
        x = np.where(emit, x >> 16, x)
        state[:active] = ((x // f) << scale) + (x % f) + sym_start[step, :active]
    # The decoder reads in (step, lane) order the words the encoder emitted in reverse order.
    payload = state.astype("<u4").tobytes() + words[emitted].astype("<u2").tobytes()
    return (bytes([scale]) + write_freqs(freqs) + write_varint(lanes) + write_varint(len(payload)) + payload)


def decode(data: bytes, section: StreamSection) -> np.ndarray:
    """Reference decoder of a parsed rANS section; returns `section.count` symbols as uint8."""
    scale, freqs, lanes, count = section.scale, section.freqs, section.lanes, section.count
    mask = (1 << scale) - 1
    starts = np.concatenate([[0], np.cumsum(freqs)[:-1]]).astype(np.int64)
    slot_symbol = np.repeat(np.arange(len(freqs)), freqs)
    payload = np.frombuffer(data, dtype=np.uint8, count=section.payload_bytes, offset=section.payload_start)
    state = np.frombuffer(payload[:4 * lanes].tobytes(), dtype="<u4").astype(np.int64)
    words = np.frombuffer(payload[4 * lanes:].tobytes(), dtype="<u2").astype(np.int64)
    if np.any(state < RANS_L):
        raise CodecError(f"corrupt blob: rANS state of the {section.name} stream below 2^16")
    steps = -(-count // lanes)
    out = np.empty(steps * lanes, dtype=np.int64)
    next_word = 0
    for step in range(steps):
        active = min(lanes, count - step * lanes)
        x = state[:active]
        slot = x & mask
        sym = slot_symbol[slot]
        out[step * lanes:step * lanes + active] = sym
        x = freqs[sym] * (x >> scale) + slot - starts[sym]
        need = np.flatnonzero(x < RANS_L)
        if len(need):
            if next_word + len(need) > len(words):
                raise CodecError(f"corrupt blob: rANS {section.name} stream runs out of words")
            x[need] = (x[need] << 16) | words[next_word:next_word + len(need)]
            next_word += len(need)
        state[:active] = x
    if next_word != len(words) or np.any(state != RANS_L):
        raise CodecError(f"corrupt blob: rANS {section.name} stream does not end in its initial state")
    return out[:count].astype(np.uint8)


assert MAX_ENCODER_LANES <= MAX_RANS_LANES
