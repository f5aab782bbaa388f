"""One spec per dc custom op: the single source of its custom code, options record and export policy.

The options classes (export/options.py), the rewriter registry (export/rewriters.py) and the report's
list of dc ops (export/report.py) are derived from SPECS, and each C++ kernel's options layout (field names
and types, magic, version: tests/test_options_layout.py) and the delegate's list of ops are checked against
them, so a new op kind or a new options field is declared here once (and mirrored in its kernel's layout). Records are fixed little-endian structs (see options.py for why not flexbuffers).
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Dict, Mapping, Tuple

OPTIONS_VERSION = 1
"""Version byte of every options record written today."""

HEADER_FIELDS = (("magic", "4s"), ("version", "B"))
"""The two fields every record starts with."""


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """A dc custom op: what the exporter writes, the delegate reads and the report checks.

    Attributes:
      custom_code: the TFLite custom op name.
      magic: the 4 bytes that open its options record.
      fields: the record's fields after the header, in order, as (name, struct format char); names starting
        with "reserved" are written as 0.
      blob_input: index of the compressed-weights blob among the op's inputs.
      builtin: name of the TFLite BuiltinOperator the op replaces.
      layer_kinds: layer_registry kinds ("fc", "conv", "embedding") whose layers become this op.
      has_bias: whether the op takes a bias of one value per output row as its third input.
    """

    custom_code: str
    magic: bytes
    fields: Tuple[Tuple[str, str], ...]
    blob_input: int
    builtin: str
    layer_kinds: Tuple[str, ...]
    has_bias: bool = True
    version: int = OPTIONS_VERSION

    @property
    def all_fields(self) -> Tuple[Tuple[str, str], ...]:
        """Header and body fields in record order."""
        return HEADER_FIELDS + self.fields

    @property
    def struct_format(self) -> str:
        """The record's struct format (little-endian, no padding)."""
        return "<" + "".join(fmt for _, fmt in self.all_fields)

    @property
    def record_size(self) -> int:
        """Size of the options record in bytes."""
        return struct.calcsize(self.struct_format)

    def offsets(self) -> Dict[str, int]:
        """Field name -> byte offset in the record, header included."""
        result, offset = {}, 0
        for name, fmt in self.all_fields:
            result[name] = offset
            offset += struct.calcsize("<" + fmt)
        return result

    def value_fields(self) -> Tuple[str, ...]:
        """Names of the body fields that carry a value (reserved ones excluded)."""
        return tuple(name for name, _ in self.fields if not name.startswith("reserved"))

    def pack(self, values: Mapping[str, int]) -> bytes:
        """The record of `values` (one per value field; reserved fields are written as 0)."""
        body = [0 if name.startswith("reserved") else int(values[name]) for name, _ in self.fields]
        return struct.pack(self.struct_format, self.magic, self.version, *body)

    def unpack(self, data: bytes) -> Dict[str, int]:
        """Body field name -> value of a record, reserved fields included. Raises ValueError when `data`
        has the wrong size, magic or version."""
        if len(data) != self.record_size:
            raise ValueError(f"{self.custom_code} options must be {self.record_size} bytes, got {len(data)}")
        magic, version, *body = struct.unpack(self.struct_format, bytes(data))
        if magic != self.magic or version != self.version:
            raise ValueError(f"not {self.custom_code} options of version {self.version} (magic {magic!r}, "
                             f"version {version})")
        return {name: value for (name, _), value in zip(self.fields, body)}


_WINDOW = (("stride_h", "i"), ("stride_w", "i"), ("dilation_h", "i"), ("dilation_w", "i"))

FULLY_CONNECTED = OpSpec(
    custom_code="DcFullyConnected", magic=b"DCFC", blob_input=1, builtin="FULLY_CONNECTED", layer_kinds=("fc",),
    fields=(("fused_activation", "B"), ("keep_num_dims", "B"), ("reserved", "B"), ("units", "i"),
            ("input_size", "i")))

CONV_2D = OpSpec(
    custom_code="DcConv2D", magic=b"DCCV", blob_input=1, builtin="CONV_2D", layer_kinds=("conv",),
    fields=(("fused_activation", "B"), ("padding", "B"), ("reserved", "B"), ("out_channels", "i"),
            ("kernel_h", "i"), ("kernel_w", "i"), ("in_channels", "i")) + _WINDOW)

DEPTHWISE_CONV_2D = OpSpec(
    custom_code="DcDepthwiseConv2D", magic=b"DCDW", blob_input=1, builtin="DEPTHWISE_CONV_2D", layer_kinds=("conv",),
    fields=(("fused_activation", "B"), ("padding", "B"), ("layout", "B"), ("out_channels", "i"),
            ("kernel_h", "i"), ("kernel_w", "i"), ("depth_multiplier", "i")) + _WINDOW)

GATHER = OpSpec(
    custom_code="DcGather", magic=b"DCGA", blob_input=1, builtin="GATHER", layer_kinds=("embedding",),
    has_bias=False,
    fields=(("reserved0", "B"), ("reserved1", "B"), ("reserved2", "B"), ("vocab", "i"), ("dim", "i")))

SPECS: Tuple[OpSpec, ...] = (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, GATHER)
"""Every dc custom op."""

BY_CUSTOM_CODE: Dict[str, OpSpec] = {spec.custom_code: spec for spec in SPECS}
"""custom code -> spec."""
