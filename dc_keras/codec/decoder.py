"""Pure-numpy reference decoder of the compressed weight format (independent of the C++ core).

It exists to pin the format down a second time: tests check that it and the C++ codec (ops/codec) agree byte for
byte, so a misreading of FORMAT.md in either one shows up as a disagreement.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from dc_keras.codec import huffman, rans
from dc_keras.codec.format import (CODER_HUFFMAN, CODER_RANS, CODER_RAW, CodecError, ParsedBlob, StreamSection,
                                   parse)


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
    step = (1 << info.index_bits) - 1
    real = delta != 0
    if int(real.sum()) != info.num_nonzeros:
        raise CodecError(f"corrupt blob: delta stream lists {int(real.sum())} nonzeros, header says "
                         f"{info.num_nonzeros}")
    if len(delta) and not real[-1]:
        raise CodecError("corrupt blob: delta stream ends with a filler")
    positions = np.cumsum(np.where(real, delta.astype(np.int64), step)) - 1
    positions = positions[real]
    if len(positions) and positions[-1] >= info.num_elements:
        raise CodecError(f"corrupt blob: nonzero position {int(positions[-1])} outside the tensor of "
                         f"{info.num_elements} elements")
    if len(code) and int(code.max()) >= info.num_centroids:
        raise CodecError("corrupt blob: codebook index outside the codebook")
    out[positions] = parsed.codebook[code]
    return out.reshape(info.shape)
