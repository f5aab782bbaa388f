"""dc_keras.codec: the compressed weight format (Deep Compression stage 3 and beyond).

One blob stores one weight tensor: pruned positions as relative indices (`index_bits` wide, filler
entries for longer gaps), weight-shared values as codebook indices (`bits` wide), both entropy coded
(canonical length-limited Huffman as in the paper, rANS, or raw fixed width), and the float codebook.
The byte layout is specified in ops/codec/FORMAT.md.

Public API:
  encode(weights, bits=5, index_bits=5, coder="huffman", codebook_dtype="float32", layout="auto",
         block=None) -> bytes         block: None, "auto" or ("cols" | "rows", 4 | 8 | 16)
  decode(blob) -> np.ndarray          pure-numpy reference decoder (independent of the C++ core)
  decode_blocks(blob) -> dict         a block-layout blob's block form, as stored
  parse_info(blob) -> BlobInfo         header fields, without decoding the streams
  analyze(blob) -> dict                per-stream sizes, entropy, average code length, counts
  CodecError                           ValueError subclass raised for malformed blobs
  native                               ctypes bindings to the C++ decoder (decode, decode_sparse, ...)

Submodules are imported lazily so that `import dc_keras.codec` costs nothing until used, and the C++
library is compiled only when `native` is first touched.
"""
from __future__ import annotations

import importlib

from dc_keras.codec.format import BlobInfo, CodecError

_LAZY = {
    "encode": "dc_keras.codec.encoder",
    "decode": "dc_keras.codec.decoder",
    "decode_streams": "dc_keras.codec.decoder",
    "decode_blocks": "dc_keras.codec.decoder",
    "parse_info": "dc_keras.codec.format",
    "analyze": "dc_keras.codec.analysis",
    "smallest_index_bits": "dc_keras.codec.encoder",
}

__all__ = ["BlobInfo", "CodecError", "analyze", "decode", "decode_blocks", "decode_streams", "encode", "native",
           "parse_info", "smallest_index_bits"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name == "native":
        module = importlib.import_module("dc_keras.codec.native")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'dc_keras.codec' has no attribute {name!r}")


def __dir__():
    return __all__
