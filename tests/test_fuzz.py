"""libFuzzer targets under AddressSanitizer + UBSan: the fully-connected target (blob -> decoded weights ->
DcFullyConnected at batch 1, 3, 9 against a double-precision reference) for 30 s, and both targets'
corpora (valid blobs generated here, plus the committed regression corpora kept by the long runs)
replayed once through the sanitizer builds.

The decode target's 30 s run lives in test_codec_native.py beside the codec's other native tests. The
long runs reported in docs/reliability.md use the same builds: `python tests/test_fuzz.py DIR` writes the
seed corpora to DIR/decode and DIR/fully_connected and prints the two executables' paths.
"""
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dc_keras import _native, codec

ROOT = Path(__file__).resolve().parents[1]
CODEC_DIR = ROOT / "ops" / "codec"
DELEGATE_DIR = ROOT / "tflite_delegate"
FUZZ_SEED = f"-seed={os.environ.get('DC_KERAS_FUZZ_SEED', '1')}"
"""libFuzzer seed of the 30-second CI runs: fixed, so that a run is reproducible and a failure is a finding
to fix rather than chance; DC_KERAS_FUZZ_SEED=0 asks libFuzzer for a random seed when exploring."""

FUZZ_FLAGS = ["-std=c++17", "-O1", "-g", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
              "-pthread"]

# target -> (its main, the cpp_sources.txt library it links)
TARGETS = {
    "fuzz_decode": (CODEC_DIR / "tests" / "fuzz_decode.cc", "codec_tests"),
    "fuzz_fully_connected": (DELEGATE_DIR / "tests" / "fuzz_fully_connected.cc", "kernel_tests"),
}

# Regression corpora: one base64 line per input ('#' lines are comments).
CORPUS_FILES = {
    "fuzz_decode": CODEC_DIR / "tests" / "fuzz_decode_corpus.b64",
    "fuzz_fully_connected": DELEGATE_DIR / "tests" / "fuzz_fully_connected_corpus.b64",
}


def write_regression_corpus(name: str, directory: Path) -> int:
    """Writes target `name`'s committed corpus into `directory`, one file per input; returns the count."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [line for line in CORPUS_FILES[name].read_text().splitlines() if line and not line.startswith("#")]
    for index, line in enumerate(lines):
        (directory / f"regression{index:04d}").write_bytes(base64.b64decode(line))
    return len(lines)


def _libfuzzer_missing() -> str | None:
    """Why the fuzz targets cannot be built here, or None when clang++ links -fsanitize=fuzzer."""
    clang = shutil.which("clang++")
    if clang is None:
        return "clang++ not installed (.ci/setup installs clang and libclang-rt-14-dev)"
    probe = subprocess.run([clang, "-print-file-name=libclang_rt.fuzzer-x86_64.a"], capture_output=True, text=True)
    library = probe.stdout.strip()
    if probe.returncode != 0 or not Path(library).is_file():
        return "clang's libFuzzer runtime is missing (install libclang-rt-14-dev)"
    return None


def build_fuzzer(name: str) -> Path:
    """Builds fuzz target `name` with libFuzzer, ASan and UBSan, cached by the hash of its sources and headers."""
    from test_codec_native import cached_build

    main, library = TARGETS[name]
    sources, include_dirs = _native.cpp_library(library)
    return cached_build(name, ["clang++"], [main, *sources], FUZZ_FLAGS,
                        include_dirs=[*include_dirs, CODEC_DIR / "tests", DELEGATE_DIR / "tests"])


def _weights(rng, shape, density, k):
    """Pruned matrix whose nonzeros take k distinct values (k = 0: all zero)."""
    if k == 0:
        return np.zeros(shape, np.float32)
    centroids = np.unique(rng.normal(0, 1, size=4 * k).astype(np.float32))
    centroids = centroids[centroids != 0][:k]
    values = rng.choice(centroids, size=shape)
    return np.where(rng.random(shape) < density, values, np.float32(0)).astype(np.float32)


# (shape, density, codebook size): short and long rows, small and large codebooks (the chunked, pair and
# walk forms), gaps that need fillers, single rows and columns.
FC_SEED_LAYERS = [((1, 1), 1.0, 1), ((3, 5), 0.6, 3), ((16, 40), 0.3, 8), ((8, 600), 0.5, 4),
                  ((20, 30), 0.8, 64), ((5, 300), 0.02, 2), ((2, 70), 0.5, 200), ((40, 7), 0.5, 16)]
EMPTY_LAYER = ((4, 10), 0.0, 0)


def write_seed_corpora(directory: Path, include_empty_layer: bool = True) -> dict:
    """Writes valid blobs as seeds: `directory`/decode (bare blobs) and `directory`/fully_connected (two
    option bytes + blob, cycling dense/sparse mode, threads, activation and portable loops). Returns the
    count per target."""
    rng = np.random.default_rng(20)
    decode_dir, fc_dir = directory / "decode", directory / "fully_connected"
    decode_dir.mkdir(parents=True, exist_ok=True)
    fc_dir.mkdir(parents=True, exist_ok=True)
    layers = FC_SEED_LAYERS + ([EMPTY_LAYER] if include_empty_layer else [])
    count = 0
    for shape, density, k in layers:
        weights = _weights(rng, shape, density, k)
        bits = max(1, int(np.ceil(np.log2(max(k, 2)))))
        for coder in ("huffman", "rans", "raw"):
            for layout in ("sparse", "dense", "block"):
                # Block layouts cycle through both axes and the three block lengths.
                block = (("cols", "rows")[count % 2], (4, 8, 16)[count % 3]) if layout == "block" else None
                try:
                    blob = codec.encode(weights, bits=bits, index_bits=3 + count % 4, coder=coder,
                                        layout="sparse" if block else layout, block=block)
                except ValueError:
                    continue  # no codebook slot for zero (dense layout, or zeros inside stored blocks)
                options = bytes([(count & 1) | ((count >> 1) % 3) << 1 | (count % 5) << 3 | ((count >> 2) & 1) << 6,
                                 count & 0xFF])
                (decode_dir / f"seed{count:03d}").write_bytes(blob)
                (fc_dir / f"seed{count:03d}").write_bytes(options + blob)
                count += 1
    return {"fuzz_decode": count, "fuzz_fully_connected": count}


def _run_fuzzer(exe: Path, args, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout)


skip_without_libfuzzer = pytest.mark.skipif(_libfuzzer_missing() is not None, reason=str(_libfuzzer_missing()))


@skip_without_libfuzzer
def test_fuzz_fully_connected_for_30_seconds(tmp_path):
    exe = build_fuzzer("fuzz_fully_connected")
    write_seed_corpora(tmp_path)
    write_regression_corpus("fuzz_fully_connected", tmp_path / "regression")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = _run_fuzzer(exe, ["-max_total_time=30", FUZZ_SEED, "-rss_limit_mb=2048", "-print_final_stats=1",
                               f"-artifact_prefix={tmp_path}/", corpus, tmp_path / "fully_connected",
                               tmp_path / "regression"], timeout=240)
    log = result.stderr
    assert result.returncode == 0, log[-6000:]
    runs = re.search(r"Done (\d+) runs", log)
    assert runs and int(runs.group(1)) > 1000, log[-3000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("oom-*"))


@skip_without_libfuzzer
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_is_clean_under_asan_and_ubsan(target, tmp_path):
    """Every seed (valid blobs of every coder and layout) and every input of the committed regression corpus
    replayed once through the sanitizer build."""
    exe = build_fuzzer(target)
    counts = write_seed_corpora(tmp_path)
    folder = tmp_path / ("decode" if target == "fuzz_decode" else "fully_connected")
    regression = write_regression_corpus(target, folder)
    assert regression > 100
    result = subprocess.run([str(exe), *map(str, sorted(folder.iterdir()))], capture_output=True, text=True,
                            timeout=240, env={**os.environ, "FUZZ_FC_REPORT_FORM": "1"})
    assert result.returncode == 0, result.stderr[-6000:]
    assert len(re.findall(r"Executed .* in \d+ ms", result.stderr)) == counts[target] + regression
    if target == "fuzz_fully_connected":
        assert set(re.findall(r"form: (\w+)", result.stderr)) == {"dense", "chunked", "pair", "walk", "block"}


def _exported_blobs(tmp_path) -> list:
    """The dc ops' blobs of LeNet-300-100 and LeNet-5 (the suite's end-to-end models), pruned and shared as
    test_export_models does, exported with the layouts and coders the suite uses."""
    import keras

    import dc_keras
    from dc_keras.export import flatbuffer
    from dc_keras.models import lenet5, lenet_300_100
    from test_export_models import prune_and_share

    blobs = []
    for build, coder, layout in ((lenet_300_100, "huffman", "sparse"), (lenet5, "rans", "auto")):
        keras.utils.set_random_seed(5)
        model = build()
        for layer in model.layers:
            weights = layer.get_weights()
            if weights and weights[0].ndim >= 2:
                weights[0] = prune_and_share(weights[0], 0.8, 16)
                layer.set_weights(weights)
        path = tmp_path / f"{model.name}.tflite"
        dc_keras.export_tflite(model, path, coder=coder, layout=layout, min_rate=0.0)
        tflite = flatbuffer.load(path.read_bytes())
        for subgraph in tflite.subgraphs:
            for op in subgraph.operators:
                if (flatbuffer.custom_code(tflite, op) or "").startswith("Dc"):
                    blobs.append(flatbuffer.buffer_bytes(tflite, subgraph.tensors[int(op.inputs[1])].buffer))
    return blobs


@skip_without_libfuzzer
def test_exported_model_blobs_are_clean_under_asan_and_ubsan(tmp_path):
    """Every blob of the exported LeNets through both targets: the decoders, and the FC weights (a conv blob
    [out, kh, kw, in] is an [out, kh*kw*in] matrix to them) in every mode, thread count and loop set."""
    blobs = _exported_blobs(tmp_path)
    assert len(blobs) == 3 + 4
    decode_dir, fc_dir = tmp_path / "decode", tmp_path / "fully_connected"
    decode_dir.mkdir()
    fc_dir.mkdir()
    for index, blob in enumerate(blobs):
        (decode_dir / f"blob{index}").write_bytes(blob)
        for options in (0b0000000, 0b0000001, 0b1000000, 0b0000100, 0b0100010):
            (fc_dir / f"blob{index}-{options}").write_bytes(bytes([options, index]) + blob)
    for target, folder in (("fuzz_decode", decode_dir), ("fuzz_fully_connected", fc_dir)):
        inputs = sorted(folder.iterdir())
        result = _run_fuzzer(build_fuzzer(target), inputs, timeout=240)
        assert result.returncode == 0, result.stderr[-6000:]
        assert len(re.findall(r"Executed .* in \d+ ms", result.stderr)) == len(inputs)


@skip_without_libfuzzer
def test_all_zero_layer_is_clean_under_ubsan(tmp_path):
    exe = build_fuzzer("fuzz_fully_connected")
    weights = np.zeros(EMPTY_LAYER[0], np.float32)
    inputs = []
    for index, layout in enumerate(("sparse", "dense")):
        for options in (0b0000000, 0b1000000, 0b0000100):  # sparse mode with AVX2, portable, 3 threads
            path = tmp_path / f"empty-{layout}-{options}"
            path.write_bytes(bytes([options, index]) + codec.encode(weights, bits=1, index_bits=3, layout=layout))
            inputs.append(path)
    result = _run_fuzzer(exe, inputs, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


if __name__ == "__main__":
    out = Path(sys.argv[1])
    print(write_seed_corpora(out, include_empty_layer="--no-empty" not in sys.argv))
    for name in TARGETS:
        print(build_fuzzer(name))
