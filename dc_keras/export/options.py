"""Custom options of the dc ops: fixed little-endian records, mirrored by the delegate's kernels.

Why not flexbuffers (TFLite's usual choice): the delegate must parse them without TFLite's C++ headers,
and a fixed 16-byte record with a magic and a version is trivial to check on both sides.
"""
from __future__ import annotations

import dataclasses
import struct

FC_CUSTOM_CODE = "DcFullyConnected"
_FC_MAGIC = b"DCFC"
_FC_VERSION = 1
_FC_FORMAT = "<4sBBBBii"  # magic, version, fused activation, keep_num_dims, reserved, units, input size
FC_OPTIONS_SIZE = struct.calcsize(_FC_FORMAT)

# TFLite ActivationFunctionType values the delegate's FC kernel fuses (SIGN_BIT is not supported).
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}


@dataclasses.dataclass(frozen=True)
class FullyConnectedOptions:
    """What DcFullyConnected needs besides its blob and bias."""

    fused_activation: int
    keep_num_dims: bool
    units: int
    input_size: int

    def pack(self) -> bytes:
        if self.fused_activation not in ACTIVATIONS:
            raise ValueError(f"fused activation {self.fused_activation} is not supported by DcFullyConnected")
        return struct.pack(_FC_FORMAT, _FC_MAGIC, _FC_VERSION, self.fused_activation, int(self.keep_num_dims), 0,
                           self.units, self.input_size)

    @classmethod
    def unpack(cls, data: bytes) -> "FullyConnectedOptions":
        if len(data) != FC_OPTIONS_SIZE:
            raise ValueError(f"DcFullyConnected options must be {FC_OPTIONS_SIZE} bytes, got {len(data)}")
        magic, version, activation, keep, _, units, input_size = struct.unpack(_FC_FORMAT, bytes(data))
        if magic != _FC_MAGIC or version != _FC_VERSION:
            raise ValueError(f"not DcFullyConnected options of version {_FC_VERSION} (magic {magic!r}, "
                             f"version {version})")
        return cls(activation, bool(keep), units, input_size)
