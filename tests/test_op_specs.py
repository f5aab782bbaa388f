"""The op specs are the one source of the dc ops' options records: the layouts must stay those the delegate
reads, and the options classes, rewriters and report must all be derived from them."""
import struct

import pytest

from dc_keras.export import op_specs, options, report, rewriters

# The records as the C++ kernels read them (tflite_delegate/src/kernels/*.cc), written out independently.
KERNEL_FORMATS = {
    "DcFullyConnected": (b"DCFC", "<4sBBBBii"),
    "DcConv2D": (b"DCCV", "<4sBBBBiiiiiiii"),
    "DcDepthwiseConv2D": (b"DCDW", "<4sBBBBiiiiiiii"),
    "DcGather": (b"DCGA", "<4sBBBBii"),
}

SAMPLES = {
    "DcFullyConnected": options.FullyConnectedOptions(1, True, 10, 20),
    "DcConv2D": options.Conv2DOptions(3, 1, 8, 3, 5, 4, 1, 2, 1, 1),
    "DcDepthwiseConv2D": options.DepthwiseConv2DOptions(0, 0, 6, 3, 3, 2, 2, 2, 1, 1),
    "DcGather": options.GatherOptions(100, 16),
}


@pytest.mark.parametrize("spec", op_specs.SPECS, ids=lambda s: s.custom_code)
def test_spec_layout_is_the_kernels(spec):
    magic, fmt = KERNEL_FORMATS[spec.custom_code]
    assert spec.magic == magic and spec.struct_format == fmt
    assert spec.record_size == struct.calcsize(fmt)
    offsets = spec.offsets()
    assert list(offsets) == [name for name, _ in spec.all_fields]
    assert offsets["magic"] == 0 and offsets["version"] == 4 and max(offsets.values()) == spec.record_size - 4


@pytest.mark.parametrize("code", sorted(SAMPLES))
def test_options_round_trip_through_the_spec(code):
    record = SAMPLES[code].pack()
    spec = op_specs.BY_CUSTOM_CODE[code]
    assert len(record) == spec.record_size and record[:4] == spec.magic
    assert type(SAMPLES[code]).unpack(record) == SAMPLES[code]
    values = spec.unpack(record)
    for name in spec.value_fields():
        assert int(values[name]) == int(getattr(SAMPLES[code], name))


def test_fc_record_bytes_unchanged():
    assert options.FullyConnectedOptions(3, False, 7, 9).pack() == struct.pack("<4sBBBBii", b"DCFC", 1, 3, 0, 0, 7, 9)


def test_registries_derive_from_the_specs():
    codes = {spec.custom_code for spec in op_specs.SPECS}
    assert set(options.OPTIONS_CLASSES) == codes == set(report.DC_OPS)
    assert len(rewriters.REWRITERS) == len(op_specs.SPECS)


def test_wrong_magic_and_size_are_clear_errors():
    spec = op_specs.CONV_2D
    with pytest.raises(ValueError, match="must be 40 bytes"):
        spec.unpack(b"\0" * 16)
    with pytest.raises(ValueError, match="not DcConv2D options"):
        options.Conv2DOptions.unpack(SAMPLES["DcDepthwiseConv2D"].pack())
