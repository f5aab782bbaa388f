"""Custom options of the dc ops: fixed little-endian records, mirrored by the delegate's kernels.

Why not flexbuffers (TFLite's usual choice): the delegate must parse them without TFLite's C++ headers,
and a fixed record with a magic and a version is trivial to check on both sides. The record layouts are
declared in op_specs.py; each class here adds the checks of its values and the blob shape they declare.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Dict, Optional, Type

from dc_keras.export import op_specs
from dc_keras.export.op_specs import OpSpec

FC_CUSTOM_CODE = op_specs.FULLY_CONNECTED.custom_code
CONV_CUSTOM_CODE = op_specs.CONV_2D.custom_code
DEPTHWISE_CUSTOM_CODE = op_specs.DEPTHWISE_CONV_2D.custom_code
GATHER_CUSTOM_CODE = op_specs.GATHER.custom_code
FC_OPTIONS_SIZE = op_specs.FULLY_CONNECTED.record_size

# TFLite ActivationFunctionType values the delegate's kernels fuse (SIGN_BIT is not supported).
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}
PADDINGS = {0: "SAME", 1: "VALID"}  # TFLite's Padding enum
DEPTHWISE_LAYOUT_TRANSPOSED = 1     # blob [out_c, kh * kw]


class _Record:
    """pack/unpack through the class's OpSpec; subclasses are frozen dataclasses named after the spec's
    value fields and define `check()` and `blob_shape()`."""

    SPEC: ClassVar[OpSpec]
    CHECK_ON_UNPACK: ClassVar[bool] = True

    def check(self) -> None:
        """Raises ValueError when a value is one the delegate's kernel refuses."""

    def blob_shape(self) -> tuple:
        """The weight shape these options declare, which the delegate requires the blob to have."""
        raise NotImplementedError

    def pack(self) -> bytes:
        """The options record (raises ValueError on values the kernel refuses)."""
        self.check()
        return self.SPEC.pack(dataclasses.asdict(self))

    @classmethod
    def unpack(cls, data: bytes):
        """Options from a record; ValueError on a wrong size, magic, version or value."""
        fields = cls.SPEC.unpack(data)
        options = cls._from_fields(fields)
        if cls.CHECK_ON_UNPACK:
            options.check()
        return options

    @classmethod
    def _from_fields(cls, fields: Dict[str, int]):
        return cls(**{name: fields[name] for name in cls.SPEC.value_fields()})


def _check_conv_fields(op: str, activation: int, padding: int, sizes: dict) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"fused activation {activation} is not supported by {op}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be 0 (SAME) or 1 (VALID), got {padding}")
    bad = {k: v for k, v in sizes.items() if int(v) < 1}
    if bad:
        raise ValueError(f"{op}: sizes must be >= 1, got {bad}")


def _options_class(name: str, spec: OpSpec, doc: str, check, blob_shape, defaults: Optional[dict] = None,
                   **extra) -> type:
    """A frozen dataclass with one field per value field of `spec` (so the spec alone declares them), in
    record order except that fields with `defaults` come last, and the op's `check` and `blob_shape`."""
    defaults = defaults or {}
    fields = [(field, int) for field in spec.value_fields() if field not in defaults]
    fields += [(field, int, dataclasses.field(default=defaults[field])) for field in spec.value_fields()
               if field in defaults]
    namespace = {"SPEC": spec, "__doc__": doc, "__module__": __name__, "check": check, "blob_shape": blob_shape,
                 **extra}
    return dataclasses.make_dataclass(name, fields, bases=(_Record,), frozen=True, namespace=namespace)


def _sizes(options, excluded) -> dict:
    return {k: v for k, v in dataclasses.asdict(options).items() if k not in excluded}


def _check_fc(self) -> None:
    """The delegate fuses only the activations in ACTIVATIONS."""
    if self.fused_activation not in ACTIVATIONS:
        raise ValueError(f"fused activation {self.fused_activation} is not supported by DcFullyConnected")


def _fc_from_fields(cls, fields):
    return cls(fields["fused_activation"], bool(fields["keep_num_dims"]), fields["units"], fields["input_size"])


FullyConnectedOptions = _options_class(
    "FullyConnectedOptions", op_specs.FULLY_CONNECTED, "What DcFullyConnected needs besides its blob and bias.",
    _check_fc, lambda self: (self.units, self.input_size),
    # Only the magic and version are checked on reading: the report lets the blob checks speak for the rest.
    CHECK_ON_UNPACK=False, _from_fields=classmethod(_fc_from_fields))


def _check_conv(self) -> None:
    """Activation, padding and every size >= 1."""
    _check_conv_fields(self.SPEC.custom_code, self.fused_activation, self.padding,
                       _sizes(self, ("fused_activation", "padding")))


Conv2DOptions = _options_class(
    "Conv2DOptions", op_specs.CONV_2D, "What DcConv2D needs besides its blob and bias (40 bytes).",
    _check_conv, lambda self: (self.out_channels, self.kernel_h, self.kernel_w, self.in_channels))


def _check_depthwise(self) -> None:
    """Activation, padding, sizes >= 1, the transposed layout and out_channels divisible by the multiplier."""
    _check_conv_fields(self.SPEC.custom_code, self.fused_activation, self.padding,
                       _sizes(self, ("fused_activation", "padding", "layout")))
    if self.layout != DEPTHWISE_LAYOUT_TRANSPOSED:
        raise ValueError(f"DcDepthwiseConv2D layout must be {DEPTHWISE_LAYOUT_TRANSPOSED}, got {self.layout}")
    if self.out_channels % self.depth_multiplier:
        raise ValueError(f"out_channels {self.out_channels} is not a multiple of depth_multiplier "
                         f"{self.depth_multiplier}")


DepthwiseConv2DOptions = _options_class(
    "DepthwiseConv2DOptions", op_specs.DEPTHWISE_CONV_2D,
    "What DcDepthwiseConv2D needs besides its blob and bias (40 bytes). in_channels = out_channels / multiplier.",
    _check_depthwise, lambda self: (self.out_channels, self.kernel_h * self.kernel_w),
    defaults={"layout": DEPTHWISE_LAYOUT_TRANSPOSED})


def _check_gather(self) -> None:
    """A non-empty table."""
    if self.vocab < 1 or self.dim < 1:
        raise ValueError(f"DcGather table must be non-empty, got [{self.vocab}, {self.dim}]")


def _unpack_gather(cls, data: bytes):
    """Options from a record; its reserved bytes must be 0."""
    fields = cls.SPEC.unpack(data)
    if fields["reserved0"] or fields["reserved1"] or fields["reserved2"]:
        raise ValueError("DcGather options: reserved bytes must be 0")
    return cls(fields["vocab"], fields["dim"])


GatherOptions = _options_class(
    "GatherOptions", op_specs.GATHER, "What DcGather needs besides its blob (16 bytes).",
    _check_gather, lambda self: (self.vocab, self.dim), unpack=classmethod(_unpack_gather))


OPTIONS_CLASSES: Dict[str, Type[_Record]] = {
    cls.SPEC.custom_code: cls
    for cls in (FullyConnectedOptions, Conv2DOptions, DepthwiseConv2DOptions, GatherOptions)}
"""custom code -> options class with unpack(bytes), for validating files."""
