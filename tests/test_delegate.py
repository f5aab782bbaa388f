"""The dc TFLite delegate through ai_edge_litert: ABI pin, options, modes, threads, dynamic batch, corrupt
files failing cleanly, and the unresolved-custom-op error without the delegate."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from crafted_models import blob_span
from test_export_models import LENET, keras_lenet, max_rel_error, run_tflite

import dc_keras
from dc_keras import delegate
from dc_keras.export import flatbuffer

TOLERANCE = 1e-5
PINNED_LITERT = "2.3.0"


@pytest.fixture(scope="module")
def model():
    return keras_lenet(train=False)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("delegate") / "lenet.tflite"
    dc_keras.export_tflite(model, path)
    return path


def _x(batch, seed=2):
    return np.random.default_rng(seed).random((batch, LENET[0]), dtype=np.float32)


def test_abi_against_pinned_litert(exported, model):
    """Pins tflite_abi.h to ai-edge-litert 2.3.0: with abi_check=1 the delegate cross-checks every tensor
    and node the runtime shows it (types, dims against byte sizes, names, registrations, tensor indices)
    through our struct declarations, then must run the model exactly."""
    from importlib.metadata import version

    assert version("ai-edge-litert") == PINNED_LITERT, (
        "tflite_delegate/include/dc_delegate/tflite_abi.h was checked against ai-edge-litert "
        f"{PINNED_LITERT}; re-run this test's checks and update the pin for {version('ai-edge-litert')}")
    dc = delegate.load(options={"abi_check": "1"})
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(exported), experimental_delegates=[dc])
    x = _x(3)
    assert max_rel_error(run_tflite(interpreter, x), model(x)) <= TOLERANCE
    assert delegate.claimed_nodes(dc) == 3
    assert delegate.resident_weight_bytes(dc) > 0


def test_entry_points_are_exported_with_c_linkage():
    if shutil.which("nm") is None:
        pytest.skip("nm not installed")
    out = subprocess.run(["nm", "-D", "--defined-only", delegate.delegate_path()], capture_output=True, text=True,
                         check=True).stdout
    symbols = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert {"tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate",
            "dc_delegate_resident_weight_bytes", "dc_delegate_simd_path", "dc_delegate_block_simd_path"} <= symbols
    # -fvisibility=hidden: nothing of our C++ internals leaks into the dynamic symbol table.
    assert not [s for s in symbols if s.startswith("_ZN2dc")]


def test_without_delegate_the_custom_op_is_unresolved(exported):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(exported))
    with pytest.raises(RuntimeError, match="unresolved custom op.*DcFullyConnected|DcFullyConnected.*unresolved"):
        interpreter.allocate_tensors()


@pytest.mark.parametrize("mode,threads", [("sparse", 1), ("sparse", 2), ("dense", 1), ("dense", 2)])
def test_modes_threads_and_dynamic_batch(exported, model, mode, threads):
    interpreter = delegate.make_interpreter(exported, num_threads=threads, mode=mode)
    for batch in (1, 32, 3, 1):
        x = _x(batch, seed=batch)
        assert max_rel_error(run_tflite(interpreter, x), model(x)) <= TOLERANCE


def test_sparse_mode_keeps_weights_compressed_in_memory(exported):
    sizes = {}
    for mode in ("sparse", "dense"):
        dc = delegate.load(mode=mode)
        from ai_edge_litert.interpreter import Interpreter

        Interpreter(model_path=str(exported), experimental_delegates=[dc]).allocate_tensors()
        sizes[mode] = delegate.resident_weight_bytes(dc)
    assert sizes["dense"] == 4 * (784 * 300 + 300 * 100 + 100 * 10)
    assert sizes["sparse"] * 8 < sizes["dense"]


@pytest.mark.parametrize("options", [{"mode": "fast"}, {"num_threads": "0"}, {"num_threads": "two"},
                                     {"colour": "blue"}])
def test_bad_options_fail_to_load(options):
    from ai_edge_litert.interpreter import load_delegate

    with pytest.raises(ValueError):
        load_delegate(delegate.delegate_path(), options)


def _expect_clean_failure(data: bytes, match: str):
    from ai_edge_litert.interpreter import Interpreter

    with pytest.raises((RuntimeError, ValueError), match=match):
        interpreter = Interpreter(model_content=data, experimental_delegates=[delegate.load()])
        run_tflite(interpreter, _x(1))


@pytest.mark.parametrize("where", ["magic", "header", "codebook", "middle", "last"])
def test_corrupt_blob_fails_prepare_with_a_message(exported, where):
    data = bytearray(exported.read_bytes())
    start, size = blob_span(bytes(data), "ip1")
    offset = {"magic": 0, "header": 9, "codebook": 40, "middle": size // 2, "last": size - 1}[where]
    data[start + offset] ^= 0x5A
    _expect_clean_failure(bytes(data), "dc delegate: DcFullyConnected .*corrupt|dc delegate: .*ip1")


def test_random_corruptions_never_crash(exported):
    rng = np.random.default_rng(11)
    original = exported.read_bytes()
    start, size = blob_span(original, "ip2")
    for _ in range(20):
        data = bytearray(original)
        for offset in rng.integers(0, size, size=rng.integers(1, 6)):
            data[start + int(offset)] = int(rng.integers(0, 256))
        if bytes(data) == original:
            continue
        _expect_clean_failure(bytes(data), "dc delegate")


def test_corrupt_custom_options_fail_cleanly(exported):
    model = flatbuffer.load(exported.read_bytes())
    op = model.subgraphs[0].operators[0]
    options = np.asarray(op.customOptions, np.uint8).copy()
    options[4] = 99  # options version
    op.customOptions = options
    _expect_clean_failure(flatbuffer.serialize(model), "options version 99")


def _cpu_flags() -> set:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_block_simd_path_follows_the_cpu_and_the_switches():
    """The block-sparse FC path is the widest the CPU has; DC_KERAS_DISABLE_AVX512 steps down to AVX2 and
    DC_KERAS_DISABLE_AVX2 to the portable loops (each read once per process, hence the subprocesses)."""
    import platform
    import sys

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 paths")
    flags = _cpu_flags()
    has_avx2 = {"avx2", "fma"} <= flags
    has_avx512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
    probe = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); lib.dc_delegate_block_simd_path.restype = "
             "ctypes.c_char_p; print(lib.dc_delegate_block_simd_path().decode())")

    def path_with(env):
        run = subprocess.run([sys.executable, "-c", probe, delegate.delegate_path()], capture_output=True, text=True,
                             env=env, timeout=60)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    widest = "avx512" if has_avx512 else "avx2" if has_avx2 else "portable"
    assert path_with({}) == widest
    assert path_with({"DC_KERAS_DISABLE_AVX512": "1"}) == ("avx2" if has_avx2 else "portable")
    assert path_with({"DC_KERAS_DISABLE_AVX2": "1"}) == "portable"
