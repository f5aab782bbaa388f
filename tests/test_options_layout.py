"""The custom options records are written in Python (each op's spec in dc_keras/export/op_specs.py) and read
in C++ through each glue file's options::Layout (tflite_delegate/src/tflite_kernels/<op>.cc), which registers
its kernel itself: the delegate reports which ops it runs and, per op, the magic, version, field names and
struct format it reads, which must equal the spec's."""
from __future__ import annotations

import ctypes
import struct

import pytest

from dc_keras import delegate
from dc_keras.export import op_specs


def _library():
    library = ctypes.CDLL(delegate.delegate_path())
    for name in ("dc_delegate_options_format", "dc_delegate_options_fields"):
        getattr(library, name).restype = ctypes.c_int
        getattr(library, name).argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    library.dc_delegate_custom_ops.restype = ctypes.c_int
    library.dc_delegate_custom_ops.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return library


def _cpp_text(function: str, custom_name: str) -> str:
    out = ctypes.create_string_buffer(512)
    length = getattr(_library(), function)(custom_name.encode(), out, len(out))
    assert length >= 0, f"{function}({custom_name}) failed"
    return out.value.decode()


def test_delegate_runs_exactly_the_specified_ops():
    out = ctypes.create_string_buffer(512)
    length = _library().dc_delegate_custom_ops(out, len(out))
    assert length >= 0
    assert out.value.decode().split(",") == sorted(op_specs.BY_CUSTOM_CODE)
    assert _library().dc_delegate_custom_ops(out, 4) == -1  # too small a buffer is refused, not overrun


@pytest.mark.parametrize("custom_name", sorted(op_specs.BY_CUSTOM_CODE))
def test_cpp_layout_matches_python_spec(custom_name):
    spec = op_specs.BY_CUSTOM_CODE[custom_name]
    cpp = _cpp_text("dc_delegate_options_format", custom_name)
    assert cpp == spec.struct_format, f"{custom_name}: C++ reads {cpp}, the exporter writes {spec.struct_format}"
    assert struct.calcsize(cpp) == spec.record_size
    magic, version, names = _cpp_text("dc_delegate_options_fields", custom_name).split(" ")
    assert (magic.encode(), int(version)) == (spec.magic, spec.version)
    assert names.split(",") == [name for name, _ in spec.all_fields]


def test_unknown_op_has_no_format():
    assert _cpp_text("dc_delegate_options_format", "NotAnOp") == ""
    assert _cpp_text("dc_delegate_options_fields", "NotAnOp") == ""
