"""Block layouts of the weight format (version 2): Python and C++ readers agree, corrupt block blobs fail
cleanly, version-1 files still decode, block="auto" detects aligned block pruning, and an exported model
with a block-pruned Dense runs on the delegate's block loops and the TF op."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from dc_keras import codec
from dc_keras.codec import format as fmt
from dc_keras.codec import native

DATA = Path(__file__).parent / "data"
CENTROIDS = np.array([-0.75, -0.25, 0.125, 0.5, 1.0], np.float32)


def block_pruned(shape, axis, length, keep, seed, in_block_zeros=0):
    """A [rows, cols] matrix of CENTROIDS values whose nonzeros fill aligned blocks (`keep` of them), with
    `in_block_zeros` zeros set inside stored blocks."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    w = rng.choice(CENTROIDS, size=shape)
    if axis == "cols":
        mask = np.repeat(rng.random((rows, -(-cols // length))) < keep, length, axis=1)[:, :cols]
    else:
        mask = np.repeat(rng.random((-(-rows // length), cols)) < keep, length, axis=0)[:rows]
    w = np.where(mask, w, 0).astype(np.float32)
    nonzero = np.flatnonzero(w)
    w.reshape(-1)[rng.choice(nonzero, size=min(in_block_zeros, nonzero.size), replace=False)] = 0
    return w


@pytest.mark.parametrize("axis", ["cols", "rows"])
@pytest.mark.parametrize("length", [4, 8, 16])
@pytest.mark.parametrize("shape", [(20, 300), (33, 100)])
def test_round_trip_python_and_cpp(axis, length, shape):
    w = block_pruned(shape, axis, length, 0.3, seed=length, in_block_zeros=5)
    for coder in ("huffman", "rans", "raw"):
        blob = codec.encode(w, bits=3, index_bits=4, coder=coder, block=(axis, length))
        info = codec.parse_info(blob)
        assert (info.format_version, info.layout, info.block_axis, info.block_len) == (2, "block", axis, length)
        assert native.parse_info(blob) == info
        np.testing.assert_array_equal(codec.decode(blob), w)
        np.testing.assert_array_equal(native.decode(blob), w)
        np.testing.assert_array_equal(native.decode_sparse(blob).to_dense(), w)
    # Five in-block zeros: zero joined the codebook.
    assert 0.0 in codec.decode_blocks(blob)["codebook"]


def test_block_form_layout():
    """decode_blocks mirrors BlockSparseMatrix: codes past the edge are 0, starts are aligned columns."""
    w = np.zeros((3, 10), np.float32)
    w[0, 8:10] = [1.0, 0.5]      # edge block: columns 8..11, two past the edge
    w[2, 0:4] = [0.5, 0, 1, 1]   # a zero inside a stored block
    form = codec.decode_blocks(codec.encode(w, bits=2, block=("cols", 4)))
    assert list(form["group_ptr"]) == [0, 1, 1, 2] and list(form["block_start"]) == [8, 0]
    codebook = form["codebook"]
    assert list(codebook[form["codes"][0]][:2]) == [1.0, 0.5] and list(form["codes"][0][2:]) == [0, 0]
    assert list(codebook[form["codes"][1]]) == [0.5, 0, 1, 1]
    with pytest.raises(codec.CodecError, match="no block layout"):
        codec.decode_blocks(codec.encode(w, bits=2))


def test_auto_detects_longest_block_and_keeps_it_only_when_smaller():
    cols16 = block_pruned((40, 300), "cols", 16, 0.1, seed=1)
    rows8 = block_pruned((64, 90), "rows", 8, 0.1, seed=2)
    for w, expected in ((cols16, ("cols", 16)), (rows8, ("rows", 8))):
        assert codec.encoder.detect_block(w) == expected
        blob = codec.encode(w, bits=3, block="auto")
        info = codec.parse_info(blob)
        assert (info.block_axis, info.block_len) == expected
        assert len(blob) <= len(codec.encode(w, bits=3))
        np.testing.assert_array_equal(codec.decode(blob), w)
    # Unstructured pruning: no block shape is filled enough, the blob is as without blocks.
    rng = np.random.default_rng(3)
    scattered = np.where(rng.random((40, 300)) < 0.1, rng.choice(CENTROIDS, (40, 300)), 0).astype(np.float32)
    assert codec.encoder.detect_block(scattered) is None
    assert codec.encode(scattered, bits=3, block="auto") == codec.encode(scattered, bits=3)
    # A filled block shape that costs more than the sparse layout is not taken: in a one-column matrix every
    # row is a full "cols" block of one weight (the 15 positions past the edge still cost codes).
    single = np.zeros((64, 1), np.float32)
    single[::8] = 0.5
    assert codec.encoder.detect_block(single) == ("cols", 16)
    assert codec.parse_info(codec.encode(single, bits=1, block="auto")).block_axis is None


@pytest.mark.parametrize("block, message", [
    (("diagonal", 4), "block axis must be 'cols' or 'rows'"),
    (("cols", 5), r"block length must be one of \(4, 8, 16\)"),
    ("yes", "block must be None, 'auto' or"),
])
def test_invalid_block_arguments(block, message):
    with pytest.raises(ValueError, match=message):
        codec.encode(np.ones((4, 4), np.float32), bits=1, block=block)
    with pytest.raises(ValueError, match="layout='dense'"):
        codec.encode(np.ones((4, 4), np.float32), bits=1, block=("cols", 4), layout="dense")


def test_block_layout_needs_a_codebook_slot_for_inner_zeros():
    w = np.array([[1.0, 0.0, 0.5, 0.25]], np.float32)  # 3 nonzero values and zero: 4 = 2^2 centroids
    np.testing.assert_array_equal(codec.decode(codec.encode(w, bits=2, block=("cols", 4))), w)
    w4 = np.array([[1.0, 0.0, 0.5, 0.25, 0.125, 0, 0, 0]], np.float32)
    with pytest.raises(ValueError, match="codebook slot for the zeros"):
        codec.encode(w4, bits=2, block=("cols", 8))


def _block_body(flags=0x40, block_len=4, edge_code=0x80):
    """The hand-built [2, 6] block blob of ops/codec/tests/codec_unittest.cc (BlockBody)."""
    body = bytes([flags, block_len, 2, 2, 6, 0x22, 3, 2, 2]) + struct.pack("<3f", -1.0, 0.0, 2.0)
    return body + bytes([0x90, edge_code, 0x1A])


def _both_fail(blob, message):
    with pytest.raises(codec.CodecError, match=message):
        codec.decode(blob)
    with pytest.raises(codec.CodecError, match=message):
        native.decode(blob)


def test_hand_built_block_blob_and_its_corruptions():
    expected = np.array([[0, 0, 0, 0, 2, -1], [-1, 0, 2, 2, 0, 0]], np.float32)
    blob = fmt.assemble(_block_body())
    np.testing.assert_array_equal(codec.decode(blob), expected)
    np.testing.assert_array_equal(native.decode(blob), expected)
    _both_fail(fmt.assemble(_block_body(flags=0xC0)), "unknown block axis 3")
    _both_fail(fmt.assemble(_block_body(block_len=5)), "block length 5")
    _both_fail(fmt.assemble(_block_body(edge_code=0x81)), "block 0 has nonzero code 1 past the matrix edge")
    _both_fail(fmt.assemble(_block_body(flags=0x41)), "dense layout with a block axis")
    _both_fail(blob[:2] + b"\x03" + blob[3:], "unsupported format version 3")
    _both_fail(blob[:2] + b"\x01" + blob[3:], "unsupported feature flags")


def _v1_weights():
    """The weights tests/data/format_v1_*.dcw were written from (by the version-1 encoder)."""
    rng = np.random.default_rng(17)
    w = rng.choice(np.array([-0.75, -0.25, 0.125, 0.5, 1.0], np.float32), size=(20, 50)).astype(np.float32)
    w[rng.random((20, 50)) < 0.85] = 0.0
    return w


@pytest.mark.parametrize("name", ["format_v1_fc.dcw", "format_v1_dense.dcw"])
def test_version_1_files_still_decode(name):
    blob = (DATA / name).read_bytes()
    assert blob[2] == 1 and codec.parse_info(blob).format_version == 1
    w = _v1_weights()
    np.testing.assert_array_equal(codec.decode(blob), w)
    np.testing.assert_array_equal(native.decode(blob), w)
    np.testing.assert_array_equal(native.decode_sparse(blob).to_dense(), w)


def test_analyze_names_the_block_layout():
    w = block_pruned((16, 64), "rows", 4, 0.3, seed=5)
    report = codec.analyze(codec.encode(w, bits=3, block=("rows", 4)))
    assert (report["layout"], report["block_axis"], report["block_len"]) == ("block", "rows", 4)
    assert report["streams"]["code"]["count"] == 4 * report["num_nonzeros"]


def test_sparse_matmul_runs_block_blobs():
    from dc_keras import ops

    w = block_pruned((37, 100), "cols", 16, 0.3, seed=6, in_block_zeros=3)
    blob = codec.encode(w, bits=3, block=("cols", 16))
    x = np.random.default_rng(7).normal(size=(5, 100)).astype(np.float32)
    np.testing.assert_allclose(ops.sparse_matmul(x, blob).numpy(), x @ w.T, rtol=1e-5, atol=1e-5)
    # The op budgets (and names) the block form it builds.
    import tensorflow as tf

    with pytest.raises(tf.errors.ResourceExhaustedError, match="block form"):
        ops.sparse_matmul(x, blob, max_decoded_bytes=64)


def test_exported_block_pruned_dense_runs_the_block_loops(tmp_path):
    import keras

    import dc_keras
    from dc_keras import delegate

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(48, activation="relu", name="blocky"),
                              keras.layers.Dense(10, name="head")])
    # Keras kernels are [in, out]; the exporter stores [out, in], so "cols" blocks run along Keras's axis 0.
    kernel = block_pruned((48, 100), "cols", 16, 0.3, seed=8, in_block_zeros=2).T
    head = np.where(np.random.default_rng(9).random((48, 10)) < 0.5,
                    np.random.default_rng(10).choice(CENTROIDS, (48, 10)), 0).astype(np.float32)
    model.get_layer("blocky").set_weights([kernel, np.linspace(-1, 1, 48).astype(np.float32)])
    model.get_layer("head").set_weights([head, np.zeros(10, np.float32)])
    path = tmp_path / "block.tflite"
    # float32 biases: the block loops are checked against Keras at float32 accuracy below.
    report = dc_keras.export_tflite(model, path, verify=True, bias_dtype="float32")
    layers = {layer.name: layer for layer in report.layers}
    assert (layers["blocky"].layout, layers["blocky"].block_axis, layers["blocky"].block_len) == ("block", "cols", 16)
    assert layers["blocky"].nonzeros == int(np.count_nonzero(kernel))
    assert layers["head"].layout == "sparse"
    assert "block cols x16" in report.format()

    dc = delegate.load()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), experimental_delegates=[dc])
    x = np.random.default_rng(11).normal(size=(3, 100)).astype(np.float32)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [3, 100])
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-4, atol=1e-5)
    forms = [form for op, form in delegate.weight_forms(dc) if op == "DcFullyConnected"]
    assert len(forms) == 2 and forms.count("block") == 1  # the head layer is unstructured
