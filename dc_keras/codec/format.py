"""Container layout of the compressed weight format: constants, varints, header parsing and validation.

The byte layout is specified in ops/codec/FORMAT.md; this module and the C++ codec in ops/codec implement the
same checks so that both readers reject the same blobs with comparable messages.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import List, Optional, Tuple

import numpy as np

from dc_keras.limits import MAX_BITS, MAX_BLOB_ELEMENTS, MAX_INDEX_BITS, MIN_BITS, MIN_INDEX_BITS

MAGIC = b"DC"
FORMAT_VERSION = 2
"""Version the writer writes; version 2 added the block layouts."""
MIN_FORMAT_VERSION = 1
"""Oldest version the readers still accept."""
MAX_ELEMENTS = MAX_BLOB_ELEMENTS
MAX_RANK = 8
MAX_HUFFMAN_BITS = 12
MAX_HUFFMAN_LANES = 16
MAX_RANS_LANES = 1024
RANS_MAX_SCALE = 15
RANS_L = 1 << 16

CODER_RAW, CODER_HUFFMAN, CODER_RANS = 0, 1, 2
CODER_NAMES = {CODER_RAW: "raw", CODER_HUFFMAN: "huffman", CODER_RANS: "rans"}
CODER_IDS = {name: ident for ident, name in CODER_NAMES.items()}

FLAG_DENSE = 0x01
FLAG_FP16 = 0x02
BLOCK_AXIS_SHIFT = 6
"""Flags bits 6-7 hold the block axis (version 2; reserved in version 1)."""
BLOCK_AXIS_IDS = {"cols": 1, "rows": 2}
"""Block axis name -> flags value. "cols": a block is L consecutive columns of one row (an FC [out, in]
weight's L consecutive inputs of one output); "rows": L consecutive rows of one column."""
BLOCK_AXIS_NAMES = {ident: name for name, ident in BLOCK_AXIS_IDS.items()}
BLOCK_LENGTHS = (4, 8, 16)


class CodecError(ValueError):
    """A blob is malformed, corrupt, truncated or from an unsupported format version."""


# ---------------------------------------------------------------- byte helpers

def write_varint(value: int) -> bytes:
    """Unsigned LEB128 encoding of `value` (>= 0)."""
    if value < 0:
        raise ValueError(f"varint value must be non-negative, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Reader:
    """Bounds-checked cursor over a blob; every read raises CodecError instead of running off the end."""

    def __init__(self, data: bytes, pos: int = 0, end: Optional[int] = None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def remaining(self) -> int:
        """Bytes left before the end of the readable range."""
        return self.end - self.pos

    def u8(self, what: str) -> int:
        """Reads one byte."""
        if self.pos >= self.end:
            raise CodecError(f"truncated blob: missing {what} at byte {self.pos}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, n: int, what: str) -> bytes:
        """Reads n bytes."""
        if n > self.end - self.pos:
            raise CodecError(f"truncated blob: {what} needs {n} bytes at byte {self.pos}, "
                             f"only {self.end - self.pos} left")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str, limit: int = 2**64 - 1) -> int:
        """Reads an unsigned LEB128 value and checks it against `limit`."""
        value = 0
        for shift in range(0, 70, 7):
            byte = self.u8(what)
            if shift == 63 and byte > 1:
                raise CodecError(f"header value too large: {what} overflows 64 bits")
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value > limit:
                    raise CodecError(f"header value too large: {what} = {value} exceeds {limit}")
                return value
        raise CodecError(f"header value too large: {what} varint longer than 10 bytes")


class BitReader:
    """MSB-first reader over a byte string, for the bit-packed tables."""

    def __init__(self, data: bytes, pos: int, end: int, what: str):
        self.data, self.bitpos, self.end_bit, self.what = data, pos * 8, end * 8, what

    def bit(self) -> int:
        """Reads one bit."""
        if self.bitpos >= self.end_bit:
            raise CodecError(f"truncated blob: {self.what} runs past the end")
        value = (self.data[self.bitpos >> 3] >> (7 - (self.bitpos & 7))) & 1
        self.bitpos += 1
        return value

    def bits(self, n: int) -> int:
        """Reads an n-bit unsigned integer."""
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def align(self) -> int:
        """Checks the zero padding up to the next byte and returns the byte position after it."""
        while self.bitpos & 7:
            if self.bit():
                raise CodecError(f"corrupt blob: nonzero padding bits after {self.what}")
        return self.bitpos >> 3


class BitWriter:
    """MSB-first writer for the bit-packed tables (small; the streams use vectorised packing)."""

    def __init__(self):
        self.bits: List[int] = []

    def write(self, value: int, n: int) -> None:
        """Appends the n low bits of value, most significant first."""
        self.bits.extend((value >> (n - 1 - i)) & 1 for i in range(n))

    def getvalue(self) -> bytes:
        """The bits so far, zero padded to a byte boundary."""
        return np.packbits(np.asarray(self.bits, dtype=np.uint8)).tobytes() if self.bits else b""


# ---------------------------------------------------------------- header model

@dataclasses.dataclass
class StreamSection:
    """Where one stream section lies in the blob and how it is coded (tables already parsed)."""

    name: str
    coder: int
    count: int
    alphabet: int
    width: int
    start: int = 0          # first byte of the section (table included)
    end: int = 0            # one past its last byte
    payload_start: int = 0
    lanes: int = 1
    lane_sizes: Tuple[int, ...] = ()
    lengths: Optional[np.ndarray] = None   # Huffman code lengths per symbol
    freqs: Optional[np.ndarray] = None     # rANS frequencies per symbol
    scale: int = 0

    @property
    def nbytes(self) -> int:
        """Section size in bytes (table, lane sizes and payload)."""
        return self.end - self.start

    @property
    def payload_bytes(self) -> int:
        """Size of the coded symbols alone."""
        return self.end - self.payload_start


@dataclasses.dataclass
class BlobInfo:
    """Header fields of a blob (mirrors dc::codec::BlobInfo)."""

    shape: Tuple[int, ...]
    bits: int
    index_bits: int
    num_centroids: int
    num_nonzeros: int
    num_entries: int
    dense_layout: bool
    codebook_fp16: bool
    delta_coder: str
    code_coder: str
    num_elements: int
    header_bytes: int
    codebook_bytes: int
    delta_stream_bytes: int
    code_stream_bytes: int
    total_bytes: int
    format_version: int = FORMAT_VERSION
    block_axis: Optional[str] = None   # "cols" or "rows" in a block layout (num_nonzeros then counts blocks)
    block_len: int = 0                 # 4, 8 or 16 in a block layout

    @property
    def layout(self) -> str:
        """"dense", "sparse" or "block"."""
        return "dense" if self.dense_layout else "block" if self.block_axis else "sparse"


def matrix_dims(shape) -> Tuple[int, int]:
    """The 2-D view every in-memory form uses: (shape[0], prod(shape[1:])); a scalar is 1x1."""
    shape = tuple(int(d) for d in shape)
    if not shape:
        return 1, 1
    cols = 1
    for dim in shape[1:]:
        cols *= dim
    return shape[0], cols


def block_grid(shape, axis: str, block_len: int) -> Tuple[int, int]:
    """(rows, cols) of a block layout's grid, in blocks: "cols" rows x ceil(cols / L), "rows" ceil(rows / L)
    x cols."""
    rows, cols = matrix_dims(shape)
    if axis == "cols":
        return rows, -(-cols // block_len)
    return -(-rows // block_len), cols


@dataclasses.dataclass
class ParsedBlob:
    """Full parse result used by the reference decoder and analyze()."""

    info: BlobInfo
    data: bytes
    codebook: np.ndarray
    delta: Optional[StreamSection]
    code: Optional[StreamSection]


def _parse_huffman_table(reader: Reader, section: StreamSection) -> None:
    bitreader = BitReader(reader.data, reader.pos, reader.end, "Huffman code lengths")
    lengths = np.zeros(section.alphabet, dtype=np.int64)
    prev = 0
    for symbol in range(section.alphabet):
        if bitreader.bit() == 0:
            length = prev
        elif bitreader.bit() == 0:
            length = prev + 1
        elif bitreader.bit() == 0:
            length = prev - 1
        else:
            length = bitreader.bits(4)
        if not 0 <= length <= MAX_HUFFMAN_BITS:
            raise CodecError(f"corrupt blob: Huffman code length {length} of {section.name} stream symbol "
                             f"{symbol} outside 0..{MAX_HUFFMAN_BITS}")
        lengths[symbol] = prev = length
    reader.pos = bitreader.align()
    used = lengths > 0
    if not used.any():
        raise CodecError(f"corrupt blob: Huffman table of the {section.name} stream has no symbols")
    kraft = int(np.sum(np.left_shift(1, MAX_HUFFMAN_BITS - lengths[used])))
    if kraft > 1 << MAX_HUFFMAN_BITS:
        raise CodecError(f"corrupt blob: Huffman code lengths of the {section.name} stream violate Kraft's "
                         f"inequality")
    section.lengths = lengths


def _parse_rans_table(reader: Reader, section: StreamSection) -> None:
    scale = reader.u8(f"rANS scale of the {section.name} stream")
    if not 1 <= scale <= RANS_MAX_SCALE:
        raise CodecError(f"corrupt blob: rANS scale {scale} of the {section.name} stream outside 1..{RANS_MAX_SCALE}")
    bitreader = BitReader(reader.data, reader.pos, reader.end, "rANS frequencies")
    freqs = np.zeros(section.alphabet, dtype=np.int64)
    total = 0
    for symbol in range(section.alphabet):
        zeros = 0
        while bitreader.bit() == 0:
            zeros += 1
            if zeros > RANS_MAX_SCALE + 1:
                raise CodecError(f"corrupt blob: rANS frequency of {section.name} stream symbol {symbol} too large")
        value = (1 << zeros) | bitreader.bits(zeros)
        freqs[symbol] = value - 1
        total += value - 1
        if total > 1 << scale:
            raise CodecError(f"corrupt blob: rANS frequencies of the {section.name} stream exceed 2^{scale}")
    reader.pos = bitreader.align()
    if total != 1 << scale:
        raise CodecError(f"corrupt blob: rANS frequencies of the {section.name} stream sum to {total}, "
                         f"expected 2^{scale}")
    section.freqs, section.scale = freqs, scale


def _parse_section(reader: Reader, section: StreamSection) -> None:
    section.start = reader.pos
    if section.coder == CODER_RAW:
        section.payload_start = reader.pos
        reader.take((section.count * section.width + 7) // 8, f"raw {section.name} stream")
        section.end = reader.pos
        return
    if section.coder == CODER_HUFFMAN:
        _parse_huffman_table(reader, section)
        max_lanes = MAX_HUFFMAN_LANES
    else:
        _parse_rans_table(reader, section)
        max_lanes = MAX_RANS_LANES
    lanes = reader.varint(f"lane count of the {section.name} stream", max_lanes)
    if lanes < 1 or lanes > max(1, section.count):
        raise CodecError(f"corrupt blob: {section.name} stream has {lanes} lanes for {section.count} symbols")
    payload_len = reader.varint(f"payload length of the {section.name} stream", reader.remaining())
    sizes = []
    if section.coder == CODER_HUFFMAN:
        for lane in range(lanes - 1):
            sizes.append(reader.varint(f"lane {lane} length of the {section.name} stream", payload_len))
        if sum(sizes) > payload_len:
            raise CodecError(f"corrupt blob: lane lengths of the {section.name} stream exceed its payload")
        sizes.append(payload_len - sum(sizes))
    elif payload_len < 4 * lanes or (payload_len - 4 * lanes) % 2:
        raise CodecError(f"corrupt blob: rANS payload of the {section.name} stream has {payload_len} bytes, "
                         f"not 4*lanes plus whole 16-bit words")
    section.payload_start = reader.pos
    reader.take(payload_len, f"{section.name} stream payload")
    section.end = reader.pos
    section.lanes, section.lane_sizes = lanes, tuple(sizes)


def _check_container(data: bytes, reader: "Reader") -> int:
    """Magic, format version, body length and CRC32; leaves `reader` at the body's first byte and returns
    the version."""
    if len(data) < 2 or data[:2] != MAGIC:
        raise CodecError(f"bad magic: expected {MAGIC!r} (a dc_keras weight blob), got {data[:2]!r}")
    reader.pos = 2
    version = reader.u8("format version")
    if not MIN_FORMAT_VERSION <= version <= FORMAT_VERSION:
        raise CodecError(f"unsupported format version {version}: this reader understands versions "
                         f"{MIN_FORMAT_VERSION} to {FORMAT_VERSION}")
    body_len = reader.varint("body length", MAX_BODY_LEN)
    crc_stored = int.from_bytes(reader.take(4, "CRC32"), "little")
    body_start = reader.pos
    if len(data) - body_start < body_len:
        raise CodecError(f"truncated blob: header declares {body_len} body bytes, only {len(data) - body_start} present")
    if len(data) - body_start > body_len:
        raise CodecError(f"corrupt blob: {len(data) - body_start - body_len} trailing bytes after the declared body")
    crc = zlib.crc32(data[body_start:]) & 0xFFFFFFFF
    if crc != crc_stored:
        raise CodecError(f"CRC32 mismatch: stored {crc_stored:08x}, computed {crc:08x} (blob corrupted)")
    return version


def _read_flags(reader: "Reader", version: int) -> tuple:
    """(dense layout, fp16 codebook, code coder id, delta coder id, block axis name or None, block length) from
    the flags byte and, in a block layout, the block length byte after it."""
    flags = reader.u8("flags")
    axis_id = flags >> BLOCK_AXIS_SHIFT
    if axis_id and version < 2:
        raise CodecError(f"unsupported feature flags 0x{flags & 0xC0:02x} (written by a newer dc_keras?)")
    if axis_id == 3:
        raise CodecError("corrupt blob: unknown block axis 3 in flags")
    dense = bool(flags & FLAG_DENSE)
    block_axis, block_len = None, 0
    if axis_id:
        if dense:
            raise CodecError("corrupt blob: dense layout with a block axis")
        block_len = reader.u8("block length")
        if block_len not in BLOCK_LENGTHS:
            raise CodecError(f"corrupt blob: block length {block_len} (must be 4, 8 or 16)")
        block_axis = BLOCK_AXIS_NAMES[axis_id]
    code_coder = (flags >> 2) & 3
    delta_coder = (flags >> 4) & 3
    if code_coder == 3 or delta_coder == 3:
        raise CodecError("unsupported coder id 3 in flags")
    if dense and delta_coder:
        raise CodecError("corrupt blob: dense layout with a delta-stream coder")
    return dense, bool(flags & FLAG_FP16), code_coder, delta_coder, block_axis, block_len


def _read_shape(reader: "Reader") -> tuple:
    """(shape list, number of elements), bounded by MAX_RANK and MAX_ELEMENTS."""
    ndim = reader.u8("rank")
    if ndim > MAX_RANK:
        raise CodecError(f"header value too large: rank {ndim} exceeds {MAX_RANK}")
    shape = []
    elements = 1
    for axis in range(ndim):
        dim = reader.varint(f"dimension {axis}", MAX_ELEMENTS)
        shape.append(dim)
        elements *= dim
        if elements > MAX_ELEMENTS:
            raise CodecError(f"header value too large: tensor of shape prefix {shape} exceeds {MAX_ELEMENTS} elements")
    return shape, elements


def _read_counts(reader: "Reader", dense: bool, elements: int, positions: int, block: bool) -> tuple:
    """(bits, index_bits, centroids, nonzeros, entries) from the widths byte and the counts, each checked
    against what the layout and the tensor's size allow (`positions`: cells the delta stream walks, the
    elements or, in a block layout, the block grid's cells)."""
    widths = reader.u8("widths")
    bits, index_bits = widths & 15, widths >> 4
    if not MIN_BITS <= bits <= MAX_BITS:
        raise CodecError(f"corrupt blob: bits {bits} outside {MIN_BITS}..{MAX_BITS}")
    if dense and index_bits:
        raise CodecError(f"corrupt blob: index_bits {index_bits} in dense layout (must be 0)")
    if not dense and not MIN_INDEX_BITS <= index_bits <= MAX_INDEX_BITS:
        raise CodecError(f"corrupt blob: index_bits {index_bits} outside {MIN_INDEX_BITS}..{MAX_INDEX_BITS}")
    k = reader.varint("number of centroids", 1 << bits)
    nnz = reader.varint("number of blocks" if block else "number of nonzeros", positions)
    if dense:
        entries = elements
        if elements and not k:
            raise CodecError("corrupt blob: dense layout without a codebook")
    else:
        entries = reader.varint("number of entries", MAX_ELEMENTS)
        if entries < nnz:
            raise CodecError(f"corrupt blob: {entries} entries cannot hold {nnz} nonzeros")
        if nnz and not k:
            raise CodecError("corrupt blob: nonzeros without a codebook")
        # Every filler advances the cursor by M and every real entry by at least 1, within the walked cells.
        if (entries - nnz) * ((1 << index_bits) - 1) + nnz > positions:
            where = f"a block grid of {positions} blocks" if block else f"a tensor of {elements} elements"
            raise CodecError(f"corrupt blob: {nnz} {'blocks' if block else 'nonzeros'} and {entries - nnz} "
                             f"fillers overrun {where}")
    return bits, index_bits, k, nnz, entries


def _read_codebook(reader: "Reader", k: int, fp16: bool) -> tuple:
    """(raw codebook bytes, codebook as float32 with -0.0 read as +0.0); non-finite values are corrupt."""
    cb_raw = reader.take(k * (2 if fp16 else 4), "codebook")
    codebook = np.frombuffer(cb_raw, dtype="<f2" if fp16 else "<f4").astype(np.float32)
    if not np.all(np.isfinite(codebook)):
        raise CodecError("corrupt blob: codebook holds a non-finite value")
    codebook[codebook == 0] = 0.0   # -0.0 reads as +0.0 so every decoder yields identical bytes
    return cb_raw, codebook


def parse(blob) -> ParsedBlob:
    """Parses and validates a blob's container, header and section tables (no stream decoding)."""
    data = bytes(blob)
    reader = Reader(data)
    version = _check_container(data, reader)
    dense, fp16, code_coder, delta_coder, block_axis, block_len = _read_flags(reader, version)
    shape, elements = _read_shape(reader)
    positions = elements
    if block_axis:
        grid_rows, grid_cols = block_grid(shape, block_axis, block_len)
        positions = grid_rows * grid_cols
    bits, index_bits, k, nnz, entries = _read_counts(reader, dense, elements, positions, bool(block_axis))
    header_end = reader.pos
    cb_raw, codebook = _read_codebook(reader, k, fp16)

    delta = code = None
    if not dense and entries:
        delta = StreamSection("delta", delta_coder, entries, 1 << index_bits, index_bits)
        _parse_section(reader, delta)
    code_count = elements if dense else nnz * block_len if block_axis else nnz
    if code_count:
        code = StreamSection("code", code_coder, code_count, k, bits)
        _parse_section(reader, code)
    if reader.pos != len(data):
        raise CodecError(f"corrupt blob: {len(data) - reader.pos} unused bytes after the streams")
    info = BlobInfo(
        shape=tuple(shape), bits=bits, index_bits=index_bits, num_centroids=k, num_nonzeros=nnz,
        num_entries=entries, dense_layout=dense, codebook_fp16=fp16,
        delta_coder=CODER_NAMES[delta_coder], code_coder=CODER_NAMES[code_coder], num_elements=elements,
        header_bytes=header_end, codebook_bytes=len(cb_raw),
        delta_stream_bytes=delta.nbytes if delta else 0, code_stream_bytes=code.nbytes if code else 0,
        total_bytes=len(data), format_version=version, block_axis=block_axis, block_len=block_len)
    return ParsedBlob(info=info, data=data, codebook=codebook, delta=delta, code=code)


MAX_BODY_LEN = 2**48
"""Upper bound on a declared body length; anything larger is an oversized (corrupt) header value."""


def parse_info(blob) -> BlobInfo:
    """Header fields of `blob` (validates magic, version, sizes, CRC32 and tables; decodes no stream).

    Raises:
      CodecError: the blob is malformed, corrupt, truncated or of an unsupported version.
    """
    return parse(blob).info


def assemble(body: bytes) -> bytes:
    """Wraps a body into the container: magic, version, body length, CRC32."""
    return (MAGIC + bytes([FORMAT_VERSION]) + write_varint(len(body))
            + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "little") + body)
