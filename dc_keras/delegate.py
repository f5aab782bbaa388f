"""dc_keras's TFLite delegate: build it, find it, load it into an ai_edge_litert Interpreter.

The delegate (tflite_delegate/, C++17) runs the dc custom ops that export_tflite writes (DcFullyConnected,
DcConv2D, DcDepthwiseConv2D, DcGather) from their compressed weights. It is compiled on first use and
cached (see dc_keras/_native.py). A .tflite with dc ops loaded WITHOUT the delegate fails in
allocate_tensors with TFLite's "Encountered unresolved custom op: DcFullyConnected" error.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Dict, Optional

from dc_keras import _native

DELEGATE_ROOT = _native.SOURCE_ROOT / "tflite_delegate"
CODEC_ROOT = _native.SOURCE_ROOT / "ops" / "codec"


def sources() -> list:
    """C++ sources of libdc_delegate.so: the delegate, the kernel library and the codec's decoder core."""
    return _native.cpp_library("delegate")[0]


def include_dirs() -> list:
    """Include directories of libdc_delegate.so's sources (cpp_sources.txt)."""
    return _native.cpp_library("delegate")[1]


def build(verbose: bool = False) -> Path:
    """Compiles libdc_delegate.so if needed (cached) and returns its path."""
    return _native.build_shared_library("dc_delegate", sources(), include_dirs=include_dirs(),
                                        extra_link_flags=["-pthread", "-Wl,--no-undefined"], verbose=verbose)


def delegate_path() -> str:
    """Path of the built libdc_delegate.so (building it on first use): give it to
    ai_edge_litert.interpreter.load_delegate or to benchmark_model --external_delegate_path."""
    return str(build())


def _options(num_threads: int, mode: str, extra: Optional[Dict[str, str]]) -> Dict[str, str]:
    if mode not in ("sparse", "dense"):
        raise ValueError(f"mode must be 'sparse' or 'dense', got {mode!r}")
    if int(num_threads) < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    options = {"num_threads": str(int(num_threads)), "mode": mode}
    options.update({str(k): str(v) for k, v in (extra or {}).items()})
    return options


def load(num_threads: int = 1, mode: str = "sparse", options: Optional[Dict[str, str]] = None):
    """An ai_edge_litert Delegate of libdc_delegate.so.

    Args:
      num_threads: threads each dc kernel uses.
      mode: "sparse" (weights decoded once to the compressed-sparse P+Q form, about 2 bytes per nonzero) or
        "dense" (decoded to float32 at Prepare).
      options: further delegate options as strings, e.g. {"abi_check": "1"}, or the memory caps
        {"max_scratch_bytes": "67108864", "max_decoded_bytes": "2147483648"} (their defaults; see
        docs/export_and_delegate.md).
    """
    from ai_edge_litert.interpreter import load_delegate

    return load_delegate(delegate_path(), _options(num_threads, mode, options))


def make_interpreter(model_path=None, model_content: Optional[bytes] = None, num_threads: int = 1,
                     mode: str = "sparse", options: Optional[Dict[str, str]] = None, **interpreter_kwargs):
    """An ai_edge_litert Interpreter with the dc delegate applied (stock ops keep running on TFLite's own
    kernels with `num_threads`)."""
    from ai_edge_litert.interpreter import Interpreter

    dc = load(num_threads=num_threads, mode=mode, options=options)
    return Interpreter(model_path=None if model_path is None else str(model_path), model_content=model_content,
                       experimental_delegates=[dc], num_threads=num_threads, **interpreter_kwargs)


def _library():
    library = ctypes.CDLL(delegate_path())
    library.dc_delegate_resident_weight_bytes.restype = ctypes.c_uint64
    library.dc_delegate_resident_weight_bytes.argtypes = [ctypes.c_void_p]
    library.dc_delegate_claimed_nodes.restype = ctypes.c_int
    library.dc_delegate_claimed_nodes.argtypes = [ctypes.c_void_p]
    library.dc_delegate_simd_path.restype = ctypes.c_char_p
    library.dc_delegate_simd_path.argtypes = []
    library.dc_delegate_weight_forms.restype = ctypes.c_int64
    library.dc_delegate_weight_forms.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    library.dc_delegate_block_simd_path.restype = ctypes.c_char_p
    library.dc_delegate_block_simd_path.argtypes = []
    return library


def _pointer(delegate) -> int:
    pointer = getattr(delegate, "_delegate_ptr", None)
    if pointer is None:
        raise TypeError("expected a Delegate returned by dc_keras.delegate.load / load_delegate")
    return ctypes.cast(pointer, ctypes.c_void_p).value


def resident_weight_bytes(delegate) -> int:
    """Bytes of decoded weights the delegate's kernels hold (after the interpreter prepared them)."""
    return int(_library().dc_delegate_resident_weight_bytes(_pointer(delegate)))


def claimed_nodes(delegate) -> int:
    """Number of TFLite nodes the delegate runs."""
    return int(_library().dc_delegate_claimed_nodes(_pointer(delegate)))


def weight_forms(delegate) -> list:
    """[(custom op, weight form)] of every kernel the delegate prepared that has a choice of forms, in order:
    DcFullyConnected's "block", "chunked", "pair", "walk" or "dense" (mode=dense)."""
    library, pointer = _library(), _pointer(delegate)
    size = int(library.dc_delegate_weight_forms(pointer, None, 0))
    if size < 0:
        raise RuntimeError("the dc delegate could not report its weight forms")
    buffer = ctypes.create_string_buffer(size + 1)
    library.dc_delegate_weight_forms(pointer, buffer, size + 1)
    return [tuple(line.split(":", 1)) for line in buffer.value.decode().splitlines()]


def simd_path() -> str:
    """The SIMD path libdc_delegate.so's kernels take in this process: "neon" (arm builds), "avx2+fma+bmi2"
    (x86-64 CPUs with AVX2, unless DC_KERAS_DISABLE_AVX2 is set), "avx2+fma" or "portable"."""
    return _library().dc_delegate_simd_path().decode()


def block_simd_path() -> str:
    """The path libdc_delegate.so's block-sparse FC loops take in this process: "avx512" (x86-64 CPUs with
    AVX-512 F/BW/DQ/VL, unless DC_KERAS_DISABLE_AVX512 or DC_KERAS_DISABLE_AVX2 is set), "avx2", "neon" or
    "portable"."""
    return _library().dc_delegate_block_simd_path().decode()
