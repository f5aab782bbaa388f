"""dc-inspect on files the dc delegate would refuse or that are no .tflite at all: one line
"dc-inspect: error: ..." naming the layer and the reason, exit status 1, never a traceback. Tiny models."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_export_models import prune_and_share

import dc_keras
from dc_keras import codec, delegate, limits
from dc_keras.codec.format import assemble, write_varint
from dc_keras.export import flatbuffer, inspect_tflite
from dc_keras.export.options import FullyConnectedOptions
from dc_keras.export.report import METADATA_NAME, InvalidModelError, delegate_problem

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A .tflite with two DcFullyConnected ops: fc1 [32, 16] and fc2 [3, 32]."""
    import keras

    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu", name="fc1"),
                              keras.layers.Dense(3, name="fc2")])
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        layer.set_weights([prune_and_share(kernel, 0.5, 4), bias])
    path = tmp_path_factory.mktemp("inspect") / "tiny.tflite"
    report = dc_keras.export_tflite(model, path, min_rate=0.0)
    assert [l.name for l in report.layers] == ["fc1", "fc2"]
    return path


def _edit(source, target, change):
    """Write `target`: the flatbuffer of `source` after change(model)."""
    model = flatbuffer.load(source.read_bytes())
    change(model)
    target.write_bytes(flatbuffer.serialize(model))
    return target


def _blob_tensor(model, layer):
    return next(t for sg in model.subgraphs for t in sg.tensors if flatbuffer._text(t.name) == f"{layer}/dc_blob")


def _empty_blob(shape):
    """A valid blob of `shape` with every weight pruned (no centroids, no entries): the header alone."""
    body = bytes([0, len(shape)]) + b"".join(write_varint(d) for d in shape)
    body += bytes([1 | (2 << 4)]) + write_varint(0) + write_varint(0) + write_varint(0)
    return assemble(body)


def _set_blob(layer, blob):
    def change(model):
        model.buffers[_blob_tensor(model, layer).buffer].data = np.frombuffer(blob, np.uint8).copy()
    return change


def _set_metadata(value):
    def change(model):
        entry = next(m for m in model.metadata if flatbuffer._text(m.name) == METADATA_NAME)
        model.buffers[entry.buffer].data = np.frombuffer(json.dumps(value).encode(), np.uint8).copy()
    return change


def _dc_inspect(*args):
    return subprocess.run([sys.executable, "-m", "dc_keras.cli.inspect", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=300)


def _assert_one_line_error(run, *fragments):
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr and run.stdout == ""
    lines = [line for line in run.stderr.splitlines() if line.startswith("dc-inspect")]  # not TF's log lines
    assert len(lines) == 1 and lines[0].startswith("dc-inspect: error: "), run.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_valid_file_still_inspects(tiny):
    run = _dc_inspect(tiny)
    assert run.returncode == 0 and "fc1" in run.stdout and "DcFullyConnected" in run.stdout


def test_a_blob_of_another_shape_is_invalid_as_for_the_delegate(tiny, tmp_path):
    huge = _empty_blob([2**32 - 1, 1])
    assert codec.parse_info(huge).num_elements == 2**32 - 1  # the codec alone accepts the header
    bad = _edit(tiny, tmp_path / "huge.tflite", _set_blob("fc1", huge))
    with pytest.raises(ValueError):  # the delegate refuses it: this is what dc-inspect must not hide
        delegate.make_interpreter(bad).allocate_tensors()
    with pytest.raises(InvalidModelError, match=r"layer 'fc1' \(DcFullyConnected\): its blob declares shape "
                                                r"\[4294967295, 1\] \(4294967295 weights\) but its options say \[32, 16\]"):
        inspect_tflite(bad)
    _assert_one_line_error(_dc_inspect(bad), "huge.tflite", "would refuse", "layer 'fc1'", "[4294967295, 1]")


def test_every_refused_layer_is_named(tiny, tmp_path):
    def both(model):
        _set_blob("fc1", _empty_blob([16, 32]))(model)
        _set_blob("fc2", b"DC\x01garbage")(model)
    run = _dc_inspect(_edit(tiny, tmp_path / "both.tflite", both))
    _assert_one_line_error(run, "layer 'fc1' (DcFullyConnected): its blob declares shape [16, 32]",
                           "layer 'fc2' (DcFullyConnected): ")


def test_malformed_options_name_the_layer(tiny, tmp_path):
    def change(model):
        op = next(op for sg in model.subgraphs for op in sg.operators if flatbuffer.custom_code(model, op))
        op.customOptions = np.frombuffer(FullyConnectedOptions(0, False, -32, 16).pack(), np.uint8).copy()
    _assert_one_line_error(_dc_inspect(_edit(tiny, tmp_path / "opts.tflite", change)),
                           "layer 'fc1' (DcFullyConnected): its options give a non-positive weight shape [-32, 16]")


def test_delegate_problem_limits():
    fc = FullyConnectedOptions(0, False, 65536, 32769)
    info = codec.parse_info(_empty_blob([65536, 32769]))
    assert info.num_elements > limits.MAX_DECODED_ELEMENTS
    assert "more than the 2147483648" in delegate_problem("DcFullyConnected", fc, info, None)
    fits = FullyConnectedOptions(0, False, 65536, 32768)
    assert delegate_problem("DcFullyConnected", fits, codec.parse_info(_empty_blob([65536, 32768])), None) is None
    small = FullyConnectedOptions(0, False, 3, 4)
    assert "bias holds 2 values, expected 3" in delegate_problem("DcFullyConnected", small,
                                                                   codec.parse_info(_empty_blob([3, 4])), 8)


@pytest.mark.parametrize("entry, message", [
    ({"stock": 5}, "stock must be a list of {layer, op, reason} objects, got 5"),
    ([1, 2, 3], "must be a JSON object, got list [1, 2, 3]"),
    ({"stock": [{"layer": 1}]}, "stock entries must be {layer, op, reason} objects of strings"),
    ({"dense_tflite_bytes": "big"}, "dense_tflite_bytes must be a byte count, got \"big\""),
])
def test_malformed_metadata_is_an_error(tiny, tmp_path, entry, message):
    bad = _edit(tiny, tmp_path / "meta.tflite", _set_metadata(entry))
    with pytest.raises(ValueError) as error:
        inspect_tflite(bad)
    assert "'dc_keras' metadata entry" in str(error.value) and message in str(error.value)


@pytest.mark.parametrize("entry, message", [({"stock": 5}, "stock must be a list"), ([1, 2, 3], "got list")])
def test_malformed_metadata_in_the_cli(tiny, tmp_path, entry, message):
    bad = _edit(tiny, tmp_path / "meta.tflite", _set_metadata(entry))
    _assert_one_line_error(_dc_inspect("--json", bad), "meta.tflite", "'dc_keras' metadata entry", message)


def test_directory_and_unreadable_paths(tmp_path):
    _assert_one_line_error(_dc_inspect(tmp_path), str(tmp_path), "is a directory")
    missing = _dc_inspect(tmp_path / "nope.tflite")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert [line for line in missing.stderr.splitlines() if line.startswith("dc-inspect")] == [
        f"dc-inspect: error: {tmp_path / 'nope.tflite'}: no such file"]
