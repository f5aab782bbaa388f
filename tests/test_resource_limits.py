"""Resource limits of the delegate, the TF ops and the codec against tiny files that declare huge tensors:
every allocation is bounded by the documented caps (max_scratch_bytes, max_decoded_bytes), a violation is a
prompt error naming the layer and the sizes, an allocation failure is an error status (never a C++
exception through the C ABI), and decoding is bit-exact for denormal centroids whatever the FPU mode.

The bombs run in a subprocess (tests/crafted_models.py) so that a regression that does allocate gigabytes
is measured (peak RSS growth, wall time) instead of taking the test process down."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import crafted_models as cm
from dc_keras import codec, delegate

HERE = Path(__file__).resolve().parent
MAX_GROWTH = 64 * 2**20


def _probe(name, *args, env=None):
    """Runs crafted_models.py NAME ARGS in a fresh interpreter; returns its JSON result."""
    run = subprocess.run([sys.executable, str(HERE / "crafted_models.py"), name, *args], capture_output=True,
                         text=True, timeout=300, env={**os.environ, **(env or {})})
    assert run.returncode == 0, f"probe {name} died (exit {run.returncode}):\n{run.stderr[-3000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


def _interpreter(data: bytes, **delegate_options):
    from ai_edge_litert.interpreter import Interpreter

    mode = delegate_options.pop("mode", "sparse")
    dc = delegate.load(mode=mode, options={k: str(v) for k, v in delegate_options.items()})
    return Interpreter(model_content=data, experimental_delegates=[dc])


# ---- delegate ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, match", [
    ("conv1024", r"DcConv2D \(node 0, weights 'layer/dc_blob'\): needs 1\.5 GiB \(1610612736 bytes\) of scratch "
                 r"memory for input \[1, 1024, 1151, 3\], over the delegate's max_scratch_bytes 64\.0 MiB"),
    ("conv4096", r"DcConv2D \(node 0, .*needs 24\.0 GiB .* of scratch memory .*max_scratch_bytes"),
    ("fc65535_dense", r"DcFullyConnected \(node 0, .*shape \[65535, 65535\] decode to 16\.0 GiB .*dense float32, "
                      r"over the delegate's max_decoded_bytes 2\.0 GiB"),
    ("gather_2g", r"DcGather \(node 0, .*one table row of 2147483647 floats is 8\.0 GiB .*max_decoded_bytes"),
    # Each row fits, the output does not: TFLite's arena used to fail on it with an empty message.
    ("gather_16_rows_1g", r"DcGather \(node 0, .*indices of shape \[16\] gather 16 rows of 268435456 floats, "
                          r"16\.0 GiB .*max_decoded_bytes"),
])
def test_delegate_bombs_fail_fast_in_bounded_memory(name, match):
    result = _probe(name)
    assert result["file_bytes"] < 1024
    assert result["ok"] is False, result
    assert "dc delegate: " in result["error"] and pytest.importorskip("re").search(match, result["error"]), result
    assert result["seconds"] < 2.0, result
    assert result["rss_growth_bytes"] <= MAX_GROWTH, result


def test_allocation_failure_in_prepare_is_an_error_status_not_an_abort():
    # With the scratch cap lifted, the 4096x4096 conv really asks for 24 GiB; under an address-space limit
    # std::vector throws std::bad_alloc inside Prepare, which must come back as a failed prepare.
    result = _probe("conv4096", f"max_scratch_bytes={2**62}", "--address-space-gib", "4")
    assert result["ok"] is False, result
    assert "dc delegate: prepare: out of memory (std::bad_alloc)" in result["error"], result
    assert result["rss_growth_bytes"] <= MAX_GROWTH, result


def test_scratch_cap_is_an_option():
    data = cm.conv_bomb(64, in_c=2, out_c=3, out_w=16)  # 64*64*2 patch floats x 16 lanes = 512 KiB of scratch
    with pytest.raises(RuntimeError, match=r"DcConv2D \(node 0.*needs 0\.5 MiB \(524288 bytes\).*max_scratch_bytes "
                                           r"0\.2 MiB \(262144 bytes\)"):
        _interpreter(data, max_scratch_bytes=262144).allocate_tensors()
    interpreter = _interpreter(data, max_scratch_bytes=524288)
    interpreter.allocate_tensors()
    x = interpreter.get_input_details()[0]
    interpreter.set_tensor(x["index"], np.ones(x["shape"], np.float32))
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert out.shape == (1, 1, 16, 3) and not out.any()  # an all-zero filter


@pytest.mark.parametrize("mode, need", [("dense", 4 * 300 * 200), ("sparse", 301 * 4)])
def test_decode_cap_is_an_option(mode, need):
    data = cm.fc_bomb(300, 200)
    with pytest.raises(RuntimeError, match=rf"DcFullyConnected \(node 0.*shape \[300, 200\] decode to .*\({need} "
                                           rf"bytes\).*max_decoded_bytes .*\({need - 1} bytes\)"):
        _interpreter(data, mode=mode, max_decoded_bytes=need - 1).allocate_tensors()
    interpreter = _interpreter(data, mode=mode, max_decoded_bytes=need)
    interpreter.allocate_tensors()
    interpreter.invoke()
    assert not interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).any()


@pytest.mark.parametrize("options", [{"max_scratch_bytes": "0"}, {"max_scratch_bytes": "-5"},
                                     {"max_decoded_bytes": "lots"}, {"max_decoded_bytes": str(2**63)}])
def test_bad_cap_options_fail_to_load(options):
    from ai_edge_litert.interpreter import load_delegate

    with pytest.raises(ValueError):
        load_delegate(delegate.delegate_path(), options)


# ---- TF ops -------------------------------------------------------------------------------------------------

def test_decode_bomb_fails_fast_in_bounded_memory():
    result = _probe("decode_8g")
    assert result["ok"] is False, result
    assert result["error"].startswith("ResourceExhaustedError"), result
    assert ("shape [2147483647, 1] that decodes to 8589934588 bytes of float32, over max_decoded_bytes = 2147483648"
            in result["error"]), result
    assert result["seconds"] < 2.0 and result["rss_growth_bytes"] <= MAX_GROWTH, result


def test_op_decode_caps_are_arguments():
    import tensorflow as tf

    from dc_keras import ops

    blob = cm.empty_blob([256, 64])  # 64 KiB of float32, 257 row offsets in sparse form
    with pytest.raises(tf.errors.ResourceExhaustedError, match=r"DcDecode .*\[256, 64\].*65536 bytes of float32, "
                                                                 r"over max_decoded_bytes = 65535"):
        ops.decode(blob, max_decoded_bytes=65535)
    assert not ops.decode(blob, max_decoded_bytes=65536).numpy().any()
    with pytest.raises(tf.errors.ResourceExhaustedError, match=r"DcSparseMatMul.*sparse form, over max_decoded_bytes"):
        ops.sparse_matmul(np.ones((1, 64), np.float32), blob, max_decoded_bytes=100)
    with pytest.raises(tf.errors.ResourceExhaustedError, match=r"DcEmbeddingLookup.*sparse form, over max_decoded"):
        ops.embedding_lookup([1], blob, max_decoded_bytes=100)
    assert ops.embedding_lookup([1], blob, max_decoded_bytes=2000).shape == (1, 64)
    with pytest.raises(ValueError, match="max_decoded_bytes must be >= 1"):
        ops.decode(blob, max_decoded_bytes=0)


def test_op_allocation_failure_is_an_error_not_an_abort(monkeypatch):
    import tensorflow as tf

    from dc_keras import ops

    # The test hook throws std::bad_alloc where a decode starts (a cache miss): fresh blobs miss.
    monkeypatch.setenv("DC_KERAS_TEST_THROW_BAD_ALLOC", "1")
    calls = [lambda b: ops.decode(b), lambda b: ops.sparse_matmul(np.ones((1, 7), np.float32), b),
             lambda b: ops.embedding_lookup([0], b)]
    for rows, call in enumerate(calls, start=3):
        with pytest.raises(tf.errors.ResourceExhaustedError, match=r"Dc\w+ '.*': out of memory \(std::bad_alloc\)"):
            call(cm.empty_blob([rows, 7]))
    monkeypatch.delenv("DC_KERAS_TEST_THROW_BAD_ALLOC")
    assert ops.decode(cm.empty_blob([3, 7])).shape == (3, 7)


# ---- denormals ----------------------------------------------------------------------------------------------

DENORMAL = np.float32(1e-45)  # the smallest positive float32, 2^-149


def test_denormal_centroid_decodes_exactly_through_the_ops():
    from dc_keras import ops

    weights = np.zeros((4, 6), np.float32)
    weights[0, 1] = weights[2, 5] = DENORMAL
    weights[3, 0] = -2.5
    blob = codec.encode(weights, bits=2, index_bits=3)
    want = codec.decode(blob)
    assert want[0, 1] == DENORMAL  # the codec (no flush-to-zero outside TensorFlow) is exact
    assert ops.decode(blob).numpy().view(np.uint32).tolist() == want.view(np.uint32).tolist()
    rows = ops.embedding_lookup([0, 2], blob).numpy()
    assert rows.view(np.uint32).tolist() == want[[0, 2]].view(np.uint32).tolist()


def test_dense_layout_with_a_denormal_counts_nonzeros_like_the_codec():
    from dc_keras import ops

    codes = [1, 0, 2, 1, 1, 0]
    blob = cm.dense_raw_blob(codes, [0.0, float(DENORMAL), 3.0], [2, 3], bits=2)
    assert codec.parse_info(blob).num_nonzeros == 4
    want = codec.decode(blob)
    assert want.view(np.uint32).tolist() == np.array([[DENORMAL, 0, 3], [DENORMAL, DENORMAL, 0]],
                                                     np.float32).view(np.uint32).tolist()
    assert ops.decode(blob).numpy().view(np.uint32).tolist() == want.view(np.uint32).tolist()
    assert ops.embedding_lookup([1], blob).numpy().view(np.uint32).tolist() == want[[1]].view(np.uint32).tolist()


# ---- codec C API ----------------------------------------------------------------------------------------

def test_codec_library_reports_allocation_failure():
    # The sparse form of a [2^32 - 1, 1] tensor needs 16 GiB of row offsets; under an address-space limit the
    # allocation fails and libdc_codec.so must answer with an error code and message.
    script = f"""
import resource, sys
sys.path.insert(0, {str(HERE)!r})
import crafted_models as cm
from dc_keras.codec import native
native.parse_info(cm.empty_blob([2, 2]))
cm._limit_address_space(2)
try:
    native.decode_sparse(cm.empty_blob([2**32 - 1, 1]))
except Exception as error:
    print(type(error).__name__, error)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "out of memory" in run.stdout, run.stdout + run.stderr[-2000:]
