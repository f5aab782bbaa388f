"""Size accounting of a blob: where the bytes go and how close each stream is to its entropy."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from dc_keras.codec.decoder import _decode_section
from dc_keras.codec.format import CODER_HUFFMAN, CODER_NAMES, StreamSection, parse


def shannon_entropy(hist) -> float:
    """Shannon entropy in bits per symbol of a histogram (0 for an empty one)."""
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum()
    if total == 0:
        return 0.0
    p = hist[hist > 0] / total
    return float(-(p * np.log2(p)).sum())


def _stream_report(data: bytes, section: Optional[StreamSection]) -> Dict[str, Any]:
    if section is None:
        return {"coder": None, "count": 0, "bytes": 0, "table_bytes": 0, "payload_bytes": 0,
                "entropy_bits": 0.0, "avg_code_bits": 0.0, "bits_per_symbol": 0.0, "raw_bits": 0,
                "entropy_bytes": 0.0, "histogram": np.zeros(0, dtype=np.int64)}
    symbols = _decode_section(data, section)
    hist = np.bincount(symbols, minlength=section.alphabet)
    entropy = shannon_entropy(hist)
    if section.coder == CODER_HUFFMAN:
        avg = float((hist * section.lengths).sum() / section.count)   # exact, without lane padding
    elif section.coder == 0:
        avg = float(section.width)
    else:
        avg = section.payload_bytes * 8 / section.count
    return {
        "coder": CODER_NAMES[section.coder],
        "count": section.count,
        "bytes": section.nbytes,
        "table_bytes": section.nbytes - section.payload_bytes,
        "payload_bytes": section.payload_bytes,
        "entropy_bits": entropy,
        "entropy_bytes": entropy * section.count / 8,
        "avg_code_bits": avg,
        "bits_per_symbol": section.nbytes * 8 / section.count,
        "raw_bits": section.width,
        "histogram": hist,
    }


def analyze(blob) -> Dict[str, Any]:
    """Per-stream and per-part sizes of a blob.

    Returns a dict with the header fields (shape, bits, index_bits, layout "sparse" / "dense" / "block",
    block_axis and block_len of a block layout, format_version, counts; a block layout's num_nonzeros counts
    its stored blocks), `total_bytes`,
    `header_bytes`, `codebook_bytes`, `num_fillers`, `bits_per_nonzero` (whole blob), and per stream
    ("delta": relative indices, "code": codebook indices) its coder, symbol count, section bytes, table
    bytes (coder table, lane sizes), payload bytes, Shannon entropy of its symbols (bits/symbol and the
    implied bytes), average code length (bits/symbol; exact for Huffman, payload-based for rANS) and
    bits per symbol including the table.

    Raises:
      CodecError: the blob is malformed.
    """
    parsed = parse(blob)
    info = parsed.info
    report: Dict[str, Any] = {
        "shape": info.shape,
        "layout": info.layout,
        "block_axis": info.block_axis,
        "block_len": info.block_len,
        "format_version": info.format_version,
        "bits": info.bits,
        "index_bits": info.index_bits,
        "num_centroids": info.num_centroids,
        "num_nonzeros": info.num_nonzeros,
        "num_entries": info.num_entries,
        "num_fillers": 0 if info.dense_layout else info.num_entries - info.num_nonzeros,
        "codebook_dtype": "float16" if info.codebook_fp16 else "float32",
        "total_bytes": info.total_bytes,
        "header_bytes": info.header_bytes,
        "codebook_bytes": info.codebook_bytes,
        "streams": {"delta": _stream_report(parsed.data, parsed.delta),
                    "code": _stream_report(parsed.data, parsed.code)},
    }
    report["bits_per_nonzero"] = info.total_bytes * 8 / info.num_nonzeros if info.num_nonzeros else float("inf")
    report["compression_ratio"] = info.num_elements * 4 / info.total_bytes
    return report
