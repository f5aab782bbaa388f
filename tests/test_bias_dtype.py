"""The dc ops' biases: stored as float16 by default (export_tflite bias_dtype), float32 on request and in
older files; the delegate widens float16 exactly, and a bias of another type or the wrong count is refused by
the delegate (an error naming the op) and by dc-inspect's check."""
from __future__ import annotations

import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as schema

from crafted_models import empty_blob, fc_options, single_op_model
from test_export_models import prune_and_share

import dc_keras
from dc_keras import delegate
from dc_keras.export import flatbuffer
from dc_keras.export.errors import ExportError
from dc_keras.export.exporter import VERIFY_TOLERANCE_FLOOR, VERIFY_TOLERANCE_MARGIN
from dc_keras.export.report import InvalidModelError, inspect_tflite

SHAPE = (8, 8, 3)


def _model():
    """Conv2D -> DepthwiseConv2D -> Flatten -> Dense -> Dense, pruned and shared, with biases large enough
    that their float16 rounding shows in the outputs."""
    import keras

    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input(SHAPE), keras.layers.Conv2D(6, 3, activation="relu", name="conv"),
                              keras.layers.DepthwiseConv2D(3, name="dw"), keras.layers.Flatten(),
                              keras.layers.Dense(12, activation="relu", name="fc1"), keras.layers.Dense(4, name="fc2")])
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if layer.get_weights():
            kernel, bias = layer.get_weights()
            layer.set_weights([prune_and_share(kernel, 0.5, 8), rng.normal(0, 0.5, bias.shape).astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _model()
    out = tmp_path_factory.mktemp("bias")
    reports = {dtype: dc_keras.export_tflite(model, out / f"{dtype}.tflite", verify=True, min_rate=0.0,
                                             bias_dtype=dtype, dense_path=out / "dense.tflite")
               for dtype in ("float16", "float32")}
    default = dc_keras.export_tflite(model, out / "default.tflite", min_rate=0.0)
    return model, out, reports, default


def _dc_bias_types(path):
    model = flatbuffer.load(path.read_bytes())
    types = {}
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            custom = flatbuffer.custom_code(model, op)
            if custom:
                types[custom] = int(subgraph.tensors[int(op.inputs[2])].type)
    return types


def test_float16_is_the_default_and_halves_the_bias_bytes(exported):
    _, out, reports, default = exported
    assert set(_dc_bias_types(out / "default.tflite")) == {"DcConv2D", "DcDepthwiseConv2D", "DcFullyConnected"}
    assert set(_dc_bias_types(out / "default.tflite").values()) == {schema.TensorType.FLOAT16}
    assert set(_dc_bias_types(out / "float32.tflite").values()) == {schema.TensorType.FLOAT32}
    assert default.tflite_bytes == reports["float16"].tflite_bytes
    count = 6 + 6 + 12 + 4
    assert reports["float32"].breakdown["biases"] == 4 * count
    assert reports["float16"].breakdown["biases"] == 2 * count
    assert reports["float16"].tflite_bytes < reports["float32"].tflite_bytes
    # dc-inspect reads both files and measures the same bias bytes.
    assert inspect_tflite(out / "default.tflite").breakdown == reports["float16"].breakdown


def test_float16_biases_run_and_match_keras_within_the_verify_tolerance(exported):
    model, out, reports, _ = exported
    check = reports["float16"].verification
    # The tolerance is the float32 one plus the measured effect of rounding the biases, nothing more.
    assert check["tolerance"] == pytest.approx(max(VERIFY_TOLERANCE_FLOOR,
                                                   VERIFY_TOLERANCE_MARGIN * check["stock_tflite_rel_error"])
                                               + check["bias_rounding_rel_error"])
    assert 0 < check["bias_rounding_rel_error"] < 2e-3
    assert check["max_rel_error"] <= check["tolerance"]
    # On other inputs: the float16 file computes the Keras model whose biases are rounded to float16, to
    # float32 accuracy, and the float32 file the original model.
    import keras

    rounded = keras.models.clone_model(model)
    rounded.set_weights([w if w.ndim > 1 else w.astype(np.float16).astype(np.float32) for w in model.get_weights()])
    x = np.random.default_rng(2).standard_normal((5, *SHAPE)).astype(np.float32)
    for dtype, reference in (("float16", rounded), ("float32", model)):
        interpreter = delegate.make_interpreter(str(out / f"{dtype}.tflite"))
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        want = np.asarray(reference(x), np.float32)
        assert np.max(np.abs(got - want)) / np.max(np.abs(want)) <= 1e-5, dtype


def test_the_float32_file_is_verified_at_the_float32_tolerance(exported):
    _, _, reports, _ = exported
    check = reports["float32"].verification
    assert "bias_rounding_rel_error" not in check
    assert check["tolerance"] == max(VERIFY_TOLERANCE_FLOOR, VERIFY_TOLERANCE_MARGIN * check["stock_tflite_rel_error"])


def test_a_bias_dtype_that_is_not_float16_or_float32_is_refused(exported, tmp_path):
    model = exported[0]
    with pytest.raises(ExportError, match="bias_dtype must be one of float16, float32, got 'int8'"):
        dc_keras.export_tflite(model, tmp_path / "x.tflite", bias_dtype="int8")
    assert not (tmp_path / "x.tflite").exists()


# ---- crafted single-op files: one DcFullyConnected whose weights are all zero, so its output is its bias ----

UNITS, INPUTS = 8, 4


def _fc_with_bias(values: np.ndarray, tensor_type: int) -> bytes:
    model = flatbuffer.load(single_op_model("DcFullyConnected", fc_options(UNITS, INPUTS), [1, INPUTS],
                                            schema.TensorType.FLOAT32, empty_blob([UNITS, INPUTS]), [1, UNITS]))
    subgraph = model.subgraphs[0]
    bias = flatbuffer.add_tensor(model, subgraph, "bias", [values.size], tensor_type, values.tobytes())
    subgraph.operators[0].inputs = np.asarray([*subgraph.operators[0].inputs, bias], np.int32)
    return flatbuffer.serialize(model)


def _output(data: bytes) -> np.ndarray:
    interpreter = delegate.make_interpreter(model_content=data)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.ones((1, INPUTS), np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]


def test_the_delegate_widens_float16_biases_exactly():
    halves = np.asarray([1.0, -2.5, 65504.0, 6.0e-8, -6.1e-5, 0.0, 3.14159, -1e-3], np.float16)
    assert 0 < halves[3] < np.finfo(np.float16).tiny  # a subnormal half (2^-24)
    got = _output(_fc_with_bias(halves, schema.TensorType.FLOAT16))
    np.testing.assert_array_equal(got, halves.astype(np.float32))


def test_float32_biases_still_run():
    values = np.linspace(-3.3, 7.7, UNITS).astype(np.float32)
    np.testing.assert_array_equal(_output(_fc_with_bias(values, schema.TensorType.FLOAT32)), values)


@pytest.mark.parametrize("values, tensor_type, delegate_message, inspect_message", [
    (np.arange(UNITS, dtype=np.int8), schema.TensorType.INT8,
     "bias is INT8, must be FLOAT32 or FLOAT16", "its bias is INT8, the delegate reads FLOAT32 or FLOAT16"),
    (np.ones(UNITS - 1, np.float16), schema.TensorType.FLOAT16,
     r"bias has 7 values \(14 bytes of FLOAT16\), expected 8", r"its bias holds 7 values, expected 8 \(14 bytes of FLOAT16\)"),
    # A float32 bias relabelled FLOAT16 holds twice the values.
    (np.ones(UNITS, np.float32), schema.TensorType.FLOAT16,
     r"bias has 16 values \(32 bytes of FLOAT16\), expected 8", "its bias holds 16 values, expected 8"),
    (np.ones(UNITS + 1, np.float32), schema.TensorType.FLOAT32,
     r"bias has 9 values \(36 bytes of FLOAT32\), expected 8", "its bias holds 9 values, expected 8"),
])
def test_a_bias_of_another_type_or_count_is_refused(tmp_path, values, tensor_type, delegate_message, inspect_message):
    data = _fc_with_bias(values, tensor_type)
    with pytest.raises(RuntimeError, match=r"dc delegate: DcFullyConnected \(node 0, weights 'layer/dc_blob'\): "
                                           + delegate_message):
        _output(data)
    with pytest.raises(InvalidModelError, match=r"layer 'layer' \(DcFullyConnected\): " + inspect_message):
        inspect_tflite(data)


def test_compress_config_and_flag_carry_bias_dtype():
    from absl import flags

    from dc_keras.cli import compress
    from dc_keras.pipeline import CompressionConfig

    assert CompressionConfig().bias_dtype == "float16"
    assert CompressionConfig.from_json(CompressionConfig(bias_dtype="float32").to_json()).bias_dtype == "float32"
    with pytest.raises(ValueError, match="bias_dtype must be float16 or float32, got 'half'"):
        CompressionConfig(bias_dtype="half")
    fv = compress.define_flags(flags.FlagValues())
    fv(["dc-compress", "--bias_dtype=float32"])
    assert compress.build_config(fv, pretrained=True).bias_dtype == "float32"


def test_a_bias_beyond_float16_range_stays_float32(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu", name="big"),
                              keras.layers.Dense(3, name="small")])  # relu: the converter cannot fold big's bias into small's
    for layer, bias in (("big", [1e5, 0, 0, 0, 0]), ("small", [0.1, 0.2, 0.3])):
        kernel = model.get_layer(layer).get_weights()[0]
        model.get_layer(layer).set_weights([prune_and_share(kernel, 0.5, 4), np.asarray(bias, np.float32)])
    path = tmp_path / "m.tflite"
    report = dc_keras.export_tflite(model, path, min_rate=0.0, verify=True)
    loaded = flatbuffer.load(path.read_bytes())
    types = {flatbuffer.text(sg.tensors[int(op.inputs[1])].name): int(sg.tensors[int(op.inputs[2])].type)
             for sg in loaded.subgraphs for op in sg.operators}
    assert types == {"big/dc_blob": schema.TensorType.FLOAT32, "small/dc_blob": schema.TensorType.FLOAT16}
    assert report.breakdown["biases"] == 4 * 5 + 2 * 3
