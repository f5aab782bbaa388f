"""compression_report: the paper's P+Q accounting, on wrapped and stripped models, text and JSON."""
import json

import keras
import numpy as np
import pytest

import dc_keras
from dc_keras.clustering.report import Column, CompressionReport, count_fillers, estimate_row


def test_fillers_for_wide_gaps():
    values = np.zeros(300, np.float32)
    values[[0, 40, 41, 200]] = 1.0
    # Gaps of 0, 39, 0 and 158 zeros; with 5 bits a filler advances by 31 (FORMAT.md): 39 -> 1 filler,
    # 158 -> 5 fillers.
    assert count_fillers(values, 5) == 6
    assert count_fillers(values, 8) == 0
    assert count_fillers(np.zeros(10), 5) == 0


@pytest.mark.parametrize("index_bits", [2, 5, 8])
def test_filler_estimate_equals_what_the_codec_writes(index_bits):
    step = (1 << index_bits) - 1
    for zeros in (step - 1, step, step + 1, 2 * step, 2 * step + 1, (1 << index_bits), (1 << index_bits) + 1):
        values = np.zeros(2 + zeros + 5, np.float32)
        values[0] = 1.0
        values[1 + zeros] = -1.0
        entries = dc_keras.codec.parse_info(dc_keras.codec.encode(values, bits=1, index_bits=index_bits)).num_entries
        assert count_fillers(values, index_bits) == entries - 2, (index_bits, zeros)


def test_sparse_row_hand_computed():
    values = np.zeros(100, np.float32)
    values[::10] = np.tile([0.5, -0.5, 1.0, -1.0], 3)[:10]
    row = estimate_row("layer", "fc", values, index_bits=5, clusters=4)
    # 10 entries of (2 + 5) bits + a 4-entry float32 codebook; dense would be 100 * 3 + 5 * 32 = 460.
    assert row.storage == "sparse" and row.size_bits == 10 * 7 + 4 * 32
    assert row.weight_bits == 2 and row.index_bits == 5 and row.fillers == 0
    assert row.density == pytest.approx(0.1)
    assert row.rate == pytest.approx(198 / 3200)


def test_dense_weight_sharing_matches_paper_formula():
    # Section 3: 16 weights, 4 clusters, 32-bit codebook -> r = 16*32 / (16*2 + 4*32) = 3.2.
    values = np.tile(np.array([0.1, 0.2, 0.3, 0.4], np.float32), 4)
    row = estimate_row("w", "fc", values, index_bits=5, clusters=4)
    assert row.storage == "dense" and row.index_bits == 0
    assert row.ratio == pytest.approx(3.2)


def test_unquantized_row_counts_floats():
    values = np.random.default_rng(0).normal(size=64).astype(np.float32)  # 64 distinct values
    row = estimate_row("w", "fc", values, index_bits=5)
    assert row.clusters is None and row.weight_bits == 32 and row.size_bits == 64 * 32


def test_lenet_300_100_first_layer_is_close_to_table_2():
    # Table 2, ip1: 235K weights, 8% kept, 6-bit weights, 5-bit indices -> 3.1% of the original size.
    rng = np.random.default_rng(0)
    values = np.where(rng.random((784, 300)) < 0.08, rng.integers(1, 65, (784, 300)) / 64.0, 0.0)
    row = estimate_row("ip1", "fc", values.astype(np.float32), index_bits=5, clusters=64)
    assert row.weights == 235200
    assert 0.027 < row.rate < 0.035


def _pruned_model():
    inputs = keras.Input((64,))
    x = keras.layers.Dense(48, name="ip1")(inputs)
    x = keras.layers.Dropout(0.1)(x)
    outputs = keras.layers.Dense(10, name="ip2")(x)
    model = keras.Model(inputs, outputs)
    for name, keep in (("ip1", 0.1), ("ip2", 0.3)):
        kernel = model.get_layer(name).kernel
        w = kernel.numpy()
        w[np.abs(w) < np.quantile(np.abs(w), 1 - keep)] = 0.0
        kernel.assign(w)
    return model


def test_report_on_wrapped_and_stripped_models():
    clustered = dc_keras.cluster_weights(_pruned_model(), bits=3)
    report = dc_keras.compression_report(clustered)
    assert [r.layer for r in report.rows] == ["ip1", "ip2"]
    ip1 = report.rows[0]
    assert ip1.weights == 64 * 48 and ip1.clusters == 8 and ip1.weight_bits == 3 and ip1.index_bits == 5
    assert ip1.nonzero == int(np.count_nonzero(clustered.get_layer("cluster_ip1").get_clustered_weights()["kernel"]))
    assert report.total.weights == 64 * 48 + 48 * 10
    assert report.total.size_bits == sum(r.size_bits for r in report.rows)

    stripped = dc_keras.strip_clustering(clustered)
    stripped_report = dc_keras.compression_report(stripped)
    for wrapped_row, stripped_row in zip(report.rows, stripped_report.rows):
        assert stripped_row.layer == wrapped_row.layer and stripped_row.nonzero == wrapped_row.nonzero
        # Bits inferred from the distinct values: at most the wrapper's (empty clusters disappear).
        assert stripped_row.clusters <= 8 and stripped_row.weight_bits <= 3
        assert stripped_row.size_bits <= wrapped_row.size_bits


def test_report_text_and_json():
    report = dc_keras.compression_report(dc_keras.cluster_weights(_pruned_model(), bits=4))
    text = str(report)
    for header in ("#weights", "weights% (P)", "weight bits (P+Q)", "index bits (P+Q)", "compress rate (P+Q)"):
        assert header in text
    assert text.splitlines()[-1].startswith("total")
    data = json.loads(report.to_json())
    assert [row["layer"] for row in data["layers"]] == ["ip1", "ip2"]
    assert data["total"]["size_bits"] == report.total.size_bits
    assert data["total"]["ratio"] == pytest.approx(report.total.ratio)


def test_extra_columns_for_the_exporter():
    report = dc_keras.compression_report(dc_keras.cluster_weights(_pruned_model(), bits=4))
    column = Column("weight_bits_h", "weight bits (P+Q+H)", lambda v, row: f"{v:.1f}")
    report.add_column(column, {"ip1": 3.25, "ip2": 3.5}, total=3.3)
    text = report.to_text()
    assert "weight bits (P+Q+H)" in text and "3.2" in text and "3.5" in text
    assert json.loads(report.to_json())["layers"][0]["extra"]["weight_bits_h"] == 3.25
    with pytest.raises(ValueError, match="ip9"):
        report.add_column(column, {"ip9": 1.0})
    assert isinstance(report, CompressionReport)


def test_report_index_bits_override_and_plain_model():
    report = dc_keras.compression_report(_pruned_model(), index_bits={"ip1": 8})
    assert report.rows[0].index_bits == 8 and report.rows[1].index_bits == 5
    assert report.rows[0].weight_bits == 32  # not quantized: distinct values are as many as weights


def test_block_pruned_fc_kernel_is_costed_as_a_block_layout():
    """An FC kernel ([in, out]) pruned in aligned 16-input blocks is costed as the exporter's block layout:
    one 5-bit index per block, 16 codes per block, and that is smaller than the sparse estimate."""
    rng = np.random.default_rng(4)
    stored = np.repeat(rng.random((30, 4)) < 0.25, 16, axis=1)[:, :64]  # [out, in] mask: 16-input blocks
    values = np.where(stored, rng.choice(np.array([0.5, -0.5, 1.0, -1.0], np.float32), (30, 64)), 0).T
    row = estimate_row("ip1", "fc", values.astype(np.float32), index_bits=5, clusters=4)
    blocks = int(stored.reshape(30, 4, 16).any(axis=2).sum())
    assert (row.storage, row.block, row.blocks) == ("block", "cols16", blocks)
    assert row.size_bits == blocks * 16 * 2 + (blocks + row.fillers) * 5 + 4 * 32
    sparse = estimate_row("ip1", "conv", values.astype(np.float32), index_bits=5, clusters=4)
    assert sparse.storage == "sparse" and row.size_bits < sparse.size_bits


def test_block_pruned_conv_kernel_is_costed_as_a_block_layout():
    """A Conv2D kernel (kh, kw, in, out) pruned in blocks of 8 input channels per output and tap is costed as
    the block layout of its exported [out, kh * kw * in] form; a DepthwiseConv2D kernel stays sparse."""
    import keras

    rng = np.random.default_rng(5)
    keep = np.repeat(rng.random((3, 3, 2, 6)) < 0.3, 8, axis=2)  # (kh, kw, in / 8 -> in, out)
    kernel = np.where(keep, rng.choice(np.array([0.5, -0.5, 1.0, -1.0], np.float32), keep.shape), 0)
    conv = keras.layers.Conv2D(6, 3, use_bias=False, name="conv")
    conv.build((None, 8, 8, 16))
    conv.set_weights([kernel.astype(np.float32)])
    model = keras.Sequential([keras.Input((8, 8, 16)), conv])
    (row,) = dc_keras.compression_report(model).rows
    blocks = int(keep.sum()) // 8
    assert (row.storage, row.block, row.blocks) == ("block", "cols8", blocks)
    assert estimate_row("conv", "conv", kernel.astype(np.float32), index_bits=8, clusters=4).storage == "sparse"
