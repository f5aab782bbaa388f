"""dc_keras.export.slim: each cut of the non-weight bytes keeps the file loadable by stock ai-edge-litert
(the stock ops running without our delegate, the dc ops through it) with the same outputs, and saves bytes;
the byte breakdown adds up."""
from __future__ import annotations

import numpy as np
import pytest

from test_export_models import prune_and_share, run_tflite

import dc_keras
from dc_keras import delegate
from dc_keras.export import flatbuffer, slim
from dc_keras.export.report import inspect_tflite

SHAPE = (6, 8)


def _flatten_model():
    """Flatten (a dynamic-batch reshape in TFLite) -> Dense 24 relu -> Dense 5, pruned and shared."""
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input(SHAPE, name="image"), keras.layers.Flatten(),
                              keras.layers.Dense(24, activation="relu", name="fc1"),
                              keras.layers.Dense(5, name="fc2")])
    for layer in model.layers[1:]:
        kernel, bias = layer.get_weights()
        layer.set_weights([prune_and_share(kernel, 0.7, 8), bias + 0.1])
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    model = _flatten_model()
    out = tmp_path_factory.mktemp("slim")
    plain, slimmed, dense = out / "plain.tflite", out / "slim.tflite", out / "dense.tflite"
    dc_keras.export_tflite(model, plain, slim_graph=False, verify=True, dense_path=dense)
    report = dc_keras.export_tflite(model, slimmed, verify=True)
    return model, plain, slimmed, dense, report


def _x(batch=3):
    return np.random.default_rng(0).random((batch, *SHAPE), dtype=np.float32)


def _stock(data: bytes):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=data)


def _codes(model):
    return [flatbuffer.builtin_code(model, op) for sg in model.subgraphs for op in sg.operators]


def _apply(data: bytes, cut) -> bytes:
    model = flatbuffer.load(data)
    cut(model)
    flatbuffer.remove_unused(model)
    return flatbuffer.serialize(model)


def _fold(model):
    assert slim.fold_static_reshapes(model) == 1
    assert slim.remove_dead_ops(model) == 3


CUTS = {"fold_reshape": _fold,
        "share_empty_buffers": lambda m: slim.share_empty_buffers(m) > 0 or pytest.fail("no buffer shared"),
        "drop_metadata": lambda m: slim.drop_informational_metadata(m) > 0 or pytest.fail("nothing dropped"),
        "io_names": lambda m: slim.name_io_after_signature(m) > 0 or pytest.fail("no name shortened"),
        "empty_quantization": lambda m: slim.drop_empty_quantization(m) > 0 or pytest.fail("nothing dropped"),
        "internal_shape_signatures": lambda m: slim.drop_internal_shape_signatures(m) > 0 or pytest.fail("none"),
        "has_rank": lambda m: slim.drop_redundant_has_rank(m) > 0 or pytest.fail("nothing cleared"),
        "subgraph_names": lambda m: slim.drop_subgraph_names(m) > 0 or pytest.fail("nothing dropped")}


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_each_cut_on_a_stock_file_runs_in_stock_litert_with_the_same_outputs(files, cut):
    _, _, _, dense, _ = files
    before = _apply(dense.read_bytes(), lambda model: None)  # through the same serializer, for sizes
    after = _apply(before, CUTS[cut])
    assert len(after) < len(before)
    x = _x()
    np.testing.assert_array_equal(run_tflite(_stock(after), x), run_tflite(_stock(before), x))
    runner = _stock(after).get_signature_runner()
    np.testing.assert_array_equal(runner(image=x)["output_0"], run_tflite(_stock(before), x))


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_each_cut_on_a_compressed_file_keeps_the_delegate_outputs(files, cut):
    _, plain, _, _, _ = files
    before = _apply(plain.read_bytes(), lambda model: None)
    after = _apply(before, CUTS[cut])
    # The serializer pads the file to a multiple of 16 bytes, which can absorb a cut of a few bytes.
    assert len(after) <= len(before)
    x = _x(2)
    np.testing.assert_array_equal(run_tflite(delegate.make_interpreter(model_content=after), x),
                                  run_tflite(delegate.make_interpreter(model_content=before), x))


def test_fold_replaces_the_shape_chain_by_one_static_reshape(files):
    from tensorflow.lite.python import schema_py_generated as schema

    _, plain, slimmed, _, _ = files
    ops = schema.BuiltinOperator
    assert {ops.SHAPE, ops.STRIDED_SLICE, ops.PACK} <= set(_codes(flatbuffer.load(plain.read_bytes())))
    model = flatbuffer.load(slimmed.read_bytes())
    codes = _codes(model)
    assert not {ops.SHAPE, ops.STRIDED_SLICE, ops.PACK} & set(codes) and codes.count(ops.RESHAPE) == 1
    reshape = next(op for op in model.subgraphs[0].operators if flatbuffer.builtin_code(model, op) == ops.RESHAPE)
    shape = flatbuffer.tensor_data(model, model.subgraphs[0].tensors[int(reshape.inputs[1])])
    assert shape.tolist() == [-1, SHAPE[0] * SHAPE[1]]


def test_fold_leaves_a_reshape_with_unknown_inner_dimensions(files):
    _, _, _, dense, _ = files
    model = flatbuffer.load(dense.read_bytes())
    subgraph = model.subgraphs[0]
    source = subgraph.tensors[int(subgraph.inputs[0])]
    source.shapeSignature = np.asarray([-1, -1, SHAPE[1]], dtype=np.int32)  # rows unknown: [-1, 48] is wrong
    assert slim.fold_static_reshapes(model) == 0
    assert slim.remove_dead_ops(model) == 0


def test_slim_export_is_smaller_verified_and_runs_batches(files):
    model, plain, slimmed, _, report = files
    assert slimmed.stat().st_size < plain.stat().st_size
    assert report.verification["max_rel_error"] <= report.verification["tolerance"]
    for batch in (1, 7):
        x = _x(batch)
        np.testing.assert_array_equal(run_tflite(delegate.make_interpreter(slimmed), x),
                                      run_tflite(delegate.make_interpreter(plain), x))
    names = {flatbuffer.text(t.name) for t in flatbuffer.load(slimmed.read_bytes()).subgraphs[0].tensors}
    assert {"image", "output_0", "fc1/dc_blob", "fc2/dc_blob"} <= names
    assert inspect_tflite(slimmed).dense_tflite_bytes == report.dense_tflite_bytes


def test_breakdown_adds_up_and_counts_blobs_and_biases(files):
    _, _, slimmed, _, report = files
    b = report.breakdown
    assert b["weights"] == sum(l.blob_bytes for l in report.layers)
    assert b["biases"] == 2 * (24 + 5)  # float16
    assert b["weights"] + b["biases"] + b["other_constants"] + b["graph"] == b["total"] == slimmed.stat().st_size
    assert "file bytes: weights" in report.format()


def test_blob_buffers_are_4_byte_aligned_not_16():
    model = flatbuffer.load(flatbuffer.serialize(_one_buffer_model(b"\x01\x02\x03")))
    data = flatbuffer.serialize(model, byte_buffers={1})
    aligned = flatbuffer.serialize(model)
    assert len(data) <= len(aligned)
    assert flatbuffer.buffer_bytes(flatbuffer.load(data), 1) == b"\x01\x02\x03"


def _one_buffer_model(payload: bytes):
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    model.subgraphs = []
    model.operatorCodes = []
    flatbuffer.add_buffer(model, payload)
    return model
