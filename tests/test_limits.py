"""dc_keras.limits: the bit-width ranges are defined once, and every stage that takes a width accepts and
rejects exactly the same values."""
import numpy as np
import pytest

import keras

from dc_keras import codec, limits
from dc_keras.clustering.report import compression_report
from dc_keras.export.rewriters import RewriteSettings
from dc_keras.pipeline import CompressionConfig


def _weights():
    w = np.zeros((4, 40), np.float32)
    w[:, ::7] = 0.5
    w[0, 3] = -0.25
    return w


def _model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    model.get_layer("fc").set_weights([np.full((4, 3), 0.5, np.float32), np.zeros(3, np.float32)])
    return model


def test_ranges_are_the_formats():
    assert (limits.MIN_BITS, limits.MAX_BITS) == (1, 8)
    assert (limits.MIN_INDEX_BITS, limits.MAX_INDEX_BITS) == (2, 8)
    assert codec.format.MAX_ELEMENTS == limits.MAX_BLOB_ELEMENTS == 2**32 - 1


@pytest.mark.parametrize("bits", [limits.MIN_BITS, limits.MAX_BITS])
@pytest.mark.parametrize("index_bits", [limits.MIN_INDEX_BITS, limits.MAX_INDEX_BITS])
def test_every_stage_accepts_the_edges(bits, index_bits):
    blob = codec.encode(_weights(), bits=bits, index_bits=index_bits)
    np.testing.assert_array_equal(codec.decode(blob), _weights())
    CompressionConfig(bits=bits, index_bits=index_bits)
    RewriteSettings(bits={"fc": bits}, index_bits=index_bits)
    assert compression_report(_model(), index_bits=index_bits).rows[0].layer == "fc"


@pytest.mark.parametrize("bits", [limits.MIN_BITS - 1, limits.MAX_BITS + 1, True, 2.0])
def test_every_stage_rejects_bits_outside_the_range(bits):
    for make in (lambda: codec.encode(_weights(), bits=bits, index_bits=5),
                 lambda: CompressionConfig(bits=bits),
                 lambda: RewriteSettings(bits=bits),
                 lambda: RewriteSettings(bits={"fc": bits})):
        with pytest.raises(ValueError, match=r"bits.* must be (0 \(not clustered\) or )?an integer in 1\.\.8"):
            make()


@pytest.mark.parametrize("index_bits", [limits.MIN_INDEX_BITS - 1, limits.MAX_INDEX_BITS + 1, 0, 32])
def test_every_stage_rejects_index_bits_outside_the_range(index_bits):
    for make in (lambda: codec.encode(_weights(), bits=4, index_bits=index_bits),
                 lambda: CompressionConfig(index_bits=index_bits),
                 lambda: RewriteSettings(index_bits={"fc": index_bits}),
                 lambda: compression_report(_model(), index_bits=index_bits)):
        with pytest.raises(ValueError, match=r"index_bits.* must be an integer in 2\.\.8"):
            make()


def test_export_rejects_a_bad_width_before_converting(tmp_path, monkeypatch):
    import dc_keras
    from dc_keras.export import exporter

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted before checking the widths")

    monkeypatch.setattr(exporter, "_convert", no_conversion)
    with pytest.raises(ValueError, match=r"index_bits must be an integer in 2\.\.8, got 9"):
        dc_keras.export_tflite(_model(), tmp_path / "m.tflite", index_bits=9)
    assert list(tmp_path.iterdir()) == []
