"""The real arm64 stack: Debian's aarch64 CPython running the aarch64 ai-edge-litert wheel, which loads
libdc_delegate.so cross-built for aarch64, all under qemu-user (tflite_delegate/tools/arm64_stack.py).

Compressed LeNet-300-100, LeNet-5, a MobileNet-style network, a network whose Conv2D / DepthwiseConv2D /
Dense layers are followed by BatchNormalization (scales separated from the folded weights, applied by stock
MULs) and an embedding model (every dc op kind: DcFullyConnected, DcConv2D, DcDepthwiseConv2D, DcGather) run
there in sparse and dense modes with 1 and 2
threads, and must match the x86-64 delegate and Keras within 1e-5 relative; the delegate must report its NEON
path; without the delegate the aarch64 interpreter must fail with "unresolved custom op". Every emulated run
happens in one qemu process (starting the emulated python costs seconds).

Skips only when the arm64 packages or wheels cannot be fetched (no network); missing tools fail, since
.ci/setup installs them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from test_channel_scale import _bn_net, _trained_like
from test_export_models import max_rel_error, prune_and_share

import dc_keras
from dc_keras import benchmark, delegate
from dc_keras.export import flatbuffer

TOLERANCE = 1e-5
DC_OPS = ("DcFullyConnected", "DcConv2D", "DcDepthwiseConv2D", "DcGather")
CONFIGS = [(mode, threads) for mode in ("sparse", "dense") for threads in (1, 2)]


arm64_stack = benchmark._arm64_stack()  # tflite_delegate/tools/arm64_stack.py


# ---- models -----------------------------------------------------------------------------------------------------

def _compress(model, settings, default=(0.6, 16), seed=0):
    """Prune + share every Dense / conv / embedding kernel (settings: name -> (sparsity, clusters)); nonzero biases."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights or type(layer).__name__ not in ("Conv2D", "DepthwiseConv2D", "Dense", "Embedding"):
            continue
        sparsity, clusters = settings.get(layer.name, default)
        weights[0] = prune_and_share(weights[0], sparsity, clusters)
        if len(weights) > 1:
            weights[1] = rng.normal(0, 0.1, weights[1].shape).astype(np.float32)
        layer.set_weights(weights)
    return model


def _mobilenet_style():
    import keras

    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6", name="stem")(inp)
    for i, (filters, stride) in enumerate([(16, 1), (24, 2)]):
        x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", activation="relu6", name=f"dw{i}")(x)
        x = keras.layers.Conv2D(filters, 1, activation="relu6", name=f"pw{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(x), name="mobilenet_style")


def _embedding_model():
    import keras

    inp = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(200, 16, name="embed")(inp)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inp, keras.layers.Dense(4, name="head")(x), name="embedding")


def _build_models():
    from dc_keras import models

    rng = np.random.default_rng(7)
    return {
        "lenet_300_100": (_compress(models.lenet_300_100(), {"ip1": (0.92, 32), "ip2": (0.91, 32), "ip3": (0.74, 32)}),
                          rng.random((2, 28, 28), dtype=np.float32)),
        "lenet5": (_compress(models.lenet5(), {"conv1": (0.34, 16), "conv2": (0.88, 32), "ip1": (0.92, 32),
                                               "ip2": (0.81, 32)}),
                   rng.random((2, 28, 28), dtype=np.float32)),
        "mobilenet_style": (_compress(_mobilenet_style(), {}), rng.normal(size=(2, 16, 16, 3)).astype(np.float32)),
        "batchnorm": (_trained_like(_compress(_bn_net(), {})), rng.normal(size=(2, 12, 12, 3)).astype(np.float32)),
        "embedding": (_compress(_embedding_model(), {"embed": (0.7, 8)}),
                      rng.integers(0, 200, size=(3, 6)).astype(np.int32)),
    }


def _dc_ops(path: Path) -> list:
    model = flatbuffer.load(path.read_bytes())
    return [flatbuffer.custom_code(model, op) for sg in model.subgraphs for op in sg.operators
            if flatbuffer.custom_code(model, op) in DC_OPS]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (file, input, Keras output or None, dc ops in the file).

    Float32 biases, so that the outputs match Keras at float32 accuracy; "lenet_300_100_fp16" is LeNet-300-100
    with the default float16 biases, checked against the x86-64 delegate only (Keras has the unrounded ones)."""
    directory = tmp_path_factory.mktemp("arm64")
    out = {}
    for name, (model, x) in _build_models().items():
        path = directory / f"{name}.tflite"
        dc_keras.export_tflite(model, path, min_rate=0.0, bias_dtype="float32")  # every weight-shared layer a dc op
        out[name] = (path, x, np.asarray(model(x)), _dc_ops(path))
        if name == "lenet_300_100":
            half = directory / f"{name}_fp16.tflite"
            dc_keras.export_tflite(model, half, min_rate=0.0)
            out[f"{name}_fp16"] = (half, x, None, _dc_ops(half))
    return out


@pytest.fixture(scope="module")
def stack():
    try:
        return arm64_stack.prepare()
    except arm64_stack.FetchError as error:
        pytest.skip(f"the arm64 Debian packages / aarch64 wheels could not be fetched (network?): {error}")


@pytest.fixture(scope="module")
def emulated(stack, exported, tmp_path_factory):
    """(outputs, report) of ONE emulated run: every model in every config, plus the no-delegate controls."""
    jobs = [{"name": f"{name}/{mode}/t{threads}", "model": str(path), "input": name, "use_delegate": True,
             "mode": mode, "threads": threads}
            for name, (path, *_rest) in exported.items() for mode, threads in CONFIGS]
    jobs += [{"name": f"{name}/no_delegate", "model": str(path), "input": name, "use_delegate": False}
             for name, (path, *_rest) in exported.items()]
    inputs = {name: x for name, (_path, x, *_rest) in exported.items()}
    return arm64_stack.run_jobs(stack, jobs, tmp_path_factory.mktemp("arm64_run"), inputs=inputs)


# ---- tests --------------------------------------------------------------------------------------------------------

def test_every_dc_op_kind_is_in_the_models(exported):
    kinds = {op for *_rest, ops in exported.values() for op in ops}
    assert kinds == set(DC_OPS)
    assert set(exported["mobilenet_style"][3]) == {"DcConv2D", "DcDepthwiseConv2D", "DcFullyConnected"}
    # every folded layer of the BatchNorm network is a dc op: 2 convs, 1 depthwise, 2 dense
    assert sorted(exported["batchnorm"][3]) == ["DcConv2D", "DcConv2D", "DcDepthwiseConv2D", "DcFullyConnected",
                                                 "DcFullyConnected"]
    assert "DcGather" in exported["embedding"][3]


def test_runs_on_aarch64_with_the_neon_path(emulated):
    _, report = emulated
    assert report["machine"] == "aarch64"
    assert report["simd_path"] == "neon"


@pytest.mark.parametrize("mode,threads", CONFIGS)
def test_matches_x86_delegate_and_keras(emulated, exported, mode, threads):
    outputs, report = emulated
    for name, (path, x, want_keras, ops) in exported.items():
        job = report["jobs"][f"{name}/{mode}/t{threads}"]
        assert job["error"] is None, f"{name}: {job['error']}\n{job.get('traceback', '')}"
        # Every dc op of the file ran on the aarch64 delegate (none left to a fallback).
        assert job["claimed_nodes"] == len(ops), name
        got = outputs[f"{name}/{mode}/t{threads}"]
        interpreter = delegate.make_interpreter(model_path=path, mode=mode, num_threads=threads)
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        want_x86 = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        assert got.shape == want_x86.shape, name
        assert max_rel_error(got, want_x86) <= TOLERANCE, f"{name}: aarch64 vs x86-64 {max_rel_error(got, want_x86):.2e}"
        if want_keras is not None:
            assert max_rel_error(got, want_keras) <= TOLERANCE, f"{name}: aarch64 vs Keras {max_rel_error(got, want_keras):.2e}"
        assert np.array_equal(got.argmax(-1), want_x86.argmax(-1)), name


def test_without_delegate_the_aarch64_interpreter_fails(emulated, exported):
    _, report = emulated
    for name in exported:
        error = report["jobs"][f"{name}/no_delegate"]["error"]
        assert error is not None and "unresolved custom op" in error, f"{name}: {error}"


def test_host_sources_read_deb822_and_one_line_files(tmp_path):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    keyring = tmp_path / "debian.gpg"
    keyring.write_text("")
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        f"Signed-By: {keyring}\n\n"
        "Types: deb\nURIs: https://vendor.example/apt\nSuites: stable\nComponents: main\n")
    (etc / "sources.list").write_text(
        f"deb [signed-by={keyring}] http://security.example/debian-security bookworm-security main\n"
        "# deb http://old.example/debian buster main\n")
    sources = arm64_stack.host_sources(etc, tmp_path / "missing-os-release")
    assert [(s.uri, s.suite) for s in sources] == [
        ("http://security.example/debian-security", "bookworm-security"),
        ("http://mirror.example/debian", "bookworm"), ("http://mirror.example/debian", "bookworm-updates")]
    assert all(s.keyring == str(keyring) for s in sources)


def test_host_sources_fall_back_to_the_codename(tmp_path):
    release = tmp_path / "os-release"
    release.write_text('NAME="Debian GNU/Linux"\nVERSION_CODENAME=bookworm\n')
    sources = arm64_stack.host_sources(tmp_path / "no-apt", release)
    assert [s.suite for s in sources] == ["bookworm", "bookworm-updates", "bookworm-security"]
    with pytest.raises(arm64_stack.StackError, match="VERSION_CODENAME"):
        arm64_stack.host_sources(tmp_path / "no-apt", tmp_path / "missing")


def test_missing_tool_is_an_error_naming_the_package(monkeypatch):
    monkeypatch.setattr(arm64_stack, "QEMU", "qemu-aarch64-not-installed")
    with pytest.raises(arm64_stack.StackError, match="qemu-aarch64-not-installed.*qemu-user"):
        arm64_stack.require_tools()


def test_host_simd_path_and_its_portable_switch():
    import subprocess

    assert delegate.simd_path() in ("avx2+fma+bmi2", "avx2+fma", "portable")
    probe = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); lib.dc_delegate_simd_path.restype = ctypes.c_char_p; "
             "print(lib.dc_delegate_simd_path().decode())")
    forced = subprocess.run([sys.executable, "-c", probe, delegate.delegate_path()], capture_output=True, text=True,
                            env={"DC_KERAS_DISABLE_AVX2": "1"}, timeout=60)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == "portable"


def test_benchmark_cli_runs_emulated(stack, exported):
    import subprocess

    path = exported["lenet_300_100"][0]
    run = subprocess.run([sys.executable, "-m", "dc_keras.cli.benchmark", "--arm64_emulated", "--num_runs=3",
                          "--warmup_runs=1", str(path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    table = run.stdout
    assert "dc delegate (aarch64, qemu)" in table
    assert "emulated (qemu) — not for comparison" in table
    assert "dc delegate SIMD path: neon" in table
    assert "dc delegate: 3 node(s)" in table


def test_unreachable_mirror_is_a_fetch_error(tmp_path, monkeypatch):
    """What the stack fixture turns into a skip: a mirror that cannot be reached (nothing listens on port 9)."""
    keyring = str(arm64_stack.DEBIAN_KEYRING)
    monkeypatch.setattr(arm64_stack, "host_sources",
                        lambda: [arm64_stack.AptSource("http://127.0.0.1:9/debian", "bookworm", ("main",), keyring)])
    with pytest.raises(arm64_stack.FetchError, match="127.0.0.1:9"):
        arm64_stack.prepare_sysroot(tmp_path)
    assert not any(tmp_path.glob("sysroot-*/.complete"))


def test_private_apt_config_keeps_every_path_in_its_work_dir(tmp_path):
    import re

    source = arm64_stack.AptSource("http://deb.debian.org/debian", "bookworm", ("main",), "/k.gpg")
    text = arm64_stack._apt_config(tmp_path, [source]).read_text()
    dirs = re.findall(r'^Dir(?:::\w+)*\s+"([^"]*)";', text, re.M)
    assert len(dirs) >= 10 and all(d.startswith(str(tmp_path)) for d in dirs), dirs
    assert 'APT::Architectures { "arm64"; };' in text
    assert (tmp_path / "status").read_text() == ""
    assert (tmp_path / "etc" / "sources.list").read_text() == (
        "deb [arch=arm64 signed-by=/k.gpg] http://deb.debian.org/debian bookworm main\n")
