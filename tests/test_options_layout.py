"""The custom options records are written in Python (each op's spec in dc_keras/export/op_specs.py) and read
in C++ at byte offsets (tflite_delegate/src/tflite_kernels/options_layout.h): the delegate reports the struct
format its offsets amount to, which must equal the spec's."""
from __future__ import annotations

import ctypes
import struct

import pytest

from dc_keras import delegate
from dc_keras.export import op_specs


def _cpp_format(custom_name: str) -> str:
    library = ctypes.CDLL(delegate.delegate_path())
    library.dc_delegate_options_format.restype = ctypes.c_int
    library.dc_delegate_options_format.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    out = ctypes.create_string_buffer(64)
    length = library.dc_delegate_options_format(custom_name.encode(), out, len(out))
    assert length >= 0, f"dc_delegate_options_format({custom_name}) failed"
    return out.value.decode()


@pytest.mark.parametrize("custom_name", sorted(op_specs.BY_CUSTOM_CODE))
def test_cpp_offsets_match_python_struct_format(custom_name):
    python_format = op_specs.BY_CUSTOM_CODE[custom_name].struct_format
    cpp = _cpp_format(custom_name)
    assert cpp == python_format, f"{custom_name}: C++ reads {cpp}, the exporter writes {python_format}"
    assert struct.calcsize(cpp) == struct.calcsize(python_format)


def test_unknown_op_has_no_format():
    assert _cpp_format("NotAnOp") == ""
