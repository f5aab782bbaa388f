"""C++ decoder core: agreement with the numpy reference, error reporting, sanitizer unit tests, fuzzing."""
import hashlib
import re
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from dc_keras import _native, codec
from dc_keras.codec import format as fmt
from dc_keras.codec import native

from test_codec import body_of, clustered, same_bits, tensors

CODEC_DIR = native.CODEC_DIR
TEST_DIR = CODEC_DIR / "tests"
# What the codec's C++ tests link (cpp_sources.txt's [codec_tests]).
CODEC_SOURCES, CODEC_INCLUDES = _native.cpp_library("codec_tests")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensors())
def test_cpp_and_python_decoders_agree(case):
    weights, options = case
    try:
        blob = codec.encode(weights, **options)
    except ValueError:
        return   # dense layout without a zero slot: covered in test_codec
    reference = codec.decode(blob)
    assert same_bits(native.decode(blob), reference)
    assert same_bits(reference, weights)
    assert native.parse_info(blob) == codec.parse_info(blob)
    for ours, theirs in zip(native.decode_streams(blob), codec.decode_streams(blob)):
        assert np.array_equal(ours, theirs)
    sparse = native.decode_sparse(blob)
    rows = weights.shape[0] if weights.ndim else 1
    assert (sparse.rows, sparse.cols) == (rows, weights.size // rows if rows else sparse.cols)
    assert same_bits(sparse.to_dense().reshape(weights.shape), weights)
    assert sparse.row_ptr[-1] == len(sparse.delta) == len(sparse.code)
    assert sparse.resident_bytes >= len(sparse.delta) * 2 + len(sparse.row_ptr) * 4


def test_sparse_form_uses_255_fillers_per_row():
    weights = np.zeros((3, 1000), np.float32)
    weights[0, [0, 600]] = 1.0     # in-row gap of 600: two fillers of 255, then 90
    weights[2, 999] = -1.0         # first entry of a row at column 999: three fillers, then 234
    sparse = native.decode_sparse(codec.encode(weights, bits=1, index_bits=4, layout="sparse"))
    assert sparse.row_ptr.tolist() == [0, 4, 4, 8]
    assert sparse.delta.tolist() == [1, 0, 0, 90, 0, 0, 0, 235]
    assert sparse.codebook[sparse.code[[0, 3, 7]]].tolist() == [1.0, 1.0, -1.0]


@pytest.fixture
def blob():
    return codec.encode(clustered(np.random.default_rng(8), (40, 50), 0.8, 16), bits=4, index_bits=4)


def test_native_errors_carry_the_cpp_message(blob):
    with pytest.raises(codec.CodecError, match="bad magic"):
        native.decode(b"XY" + blob[2:])
    with pytest.raises(codec.CodecError, match="unsupported format version 3"):
        native.decode(blob[:2] + b"\x03" + blob[3:])
    with pytest.raises(codec.CodecError, match="CRC32 mismatch"):
        native.decode(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(codec.CodecError, match="truncated"):
        native.decode_sparse(blob[:-5])
    with pytest.raises(codec.CodecError, match="header value too large"):
        native.parse_info(fmt.assemble(bytes([0, 2]) + fmt.write_varint(2**31) + fmt.write_varint(2**31)))


def test_every_truncation_and_bit_flip_rejected_by_cpp(blob):
    for length in range(len(blob)):
        with pytest.raises(codec.CodecError):
            native.decode(blob[:length])
    for bit in range(0, len(blob) * 8, 5):
        corrupted = bytearray(blob)
        corrupted[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(codec.CodecError):
            native.decode_sparse(bytes(corrupted))


@pytest.mark.parametrize("coder", ["huffman", "rans", "raw"])
def test_corruptions_with_valid_crc_judged_alike(coder):
    """With the CRC recomputed, both decoders must reject the same blobs and agree on the rest."""
    weights = clustered(np.random.default_rng(10), (30, 40), 0.7, 8)
    body = body_of(codec.encode(weights, bits=3, index_bits=3, coder=coder, layout="sparse"))
    rng = np.random.default_rng(11)
    accepted = 0
    for _ in range(120):
        mutated = bytearray(body)
        for position in rng.integers(0, len(body), size=rng.integers(1, 3)):
            mutated[position] ^= 1 << int(rng.integers(0, 8))
        candidate = fmt.assemble(bytes(mutated))
        try:
            reference = codec.decode(candidate)
        except codec.CodecError:
            with pytest.raises(codec.CodecError):
                native.decode(candidate)
            continue
        accepted += 1
        assert same_bits(native.decode(candidate), reference)
    assert accepted < 120


def test_wrong_output_length_is_an_argument_error(blob):
    lib = native._load()
    import ctypes
    out = np.empty(3, np.float32)
    err = ctypes.create_string_buffer(256)
    code = lib.dc_codec_decode_dense(blob, len(blob), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), 3, err, 256)
    assert code == 2 and b"output has 3 elements" in err.value


# ---------------------------------------------------------------------------------- sanitizer builds

def cached_build(name: str, command_prefix, sources, flags, include_dirs=CODEC_INCLUDES):
    """Builds an executable once per hash of its sources, the headers under its include directories and its
    flags, in dc_keras's build cache. Used for the codec tests here and the fuzz targets (test_fuzz.py)."""
    headers = sorted({h for d in include_dirs for h in d.rglob("*.h")})
    digest = hashlib.sha256()
    for path in [*sources, *headers]:
        digest.update(path.read_bytes())
    digest.update(" ".join([*command_prefix, *flags]).encode())
    out_dir = _native.cache_dir() / f"{name}-{digest.hexdigest()[:16]}"
    exe = out_dir / name
    if not exe.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / f".{name}.partial"
        result = subprocess.run([*command_prefix, *flags, *(f"-I{d}" for d in include_dirs), *map(str, sources),
                                 "-o", str(partial)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        partial.replace(exe)
    return exe


def _write_vectors(directory):
    rng = np.random.default_rng(12)
    cases = [((), 0.0, 1), ((7,), 0.5, 2), ((0, 5), 0.5, 2), ((20, 30), 0.9, 16), ((64, 64), 0.5, 256),
             ((3, 4, 5), 0.2, 4), ((150, 130), 0.45, 8)]
    count = 0
    for shape, sparsity, k in cases:
        weights = clustered(rng, shape, sparsity, k)
        bits = max(1, int(np.ceil(np.log2(k))))
        for coder in ("huffman", "rans", "raw"):
            for layout in ("sparse", "dense"):
                try:
                    blob = codec.encode(weights, bits=bits, index_bits=3, coder=coder, layout=layout)
                except ValueError:
                    continue
                (directory / f"v{count}.blob").write_bytes(blob)
                (directory / f"v{count}.f32").write_bytes(weights.tobytes())
                count += 1
    # Block layouts (version 2): both axes, every L, edge blocks (30 and 130 columns are not multiples of 8
    # or 16), zeros inside stored blocks, one case per coder.
    block_cases = [((20, 30), ("cols", 8)), ((20, 30), ("rows", 16)), ((150, 130), ("cols", 16)),
                   ((150, 130), ("rows", 4)), ((3, 4, 5), ("cols", 4)), ((7,), ("rows", 8))]
    for index, (shape, block) in enumerate(block_cases):
        weights = clustered(rng, shape, 0.6, 7)
        coder = ("huffman", "rans", "raw")[index % 3]
        blob = codec.encode(weights, bits=3, index_bits=3, coder=coder, block=block)
        (directory / f"v{count}.blob").write_bytes(blob)
        (directory / f"v{count}.f32").write_bytes(weights.tobytes())
        count += 1
    return count


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_cpp_unit_tests_under_asan_ubsan(tmp_path):
    exe = cached_build("codec_unittest", ["g++"],
                        [TEST_DIR / "codec_unittest.cc", *CODEC_SOURCES],
                        ["-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
                         "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"])
    count = _write_vectors(tmp_path)
    result = subprocess.run([str(exe), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"{count} test vectors" in result.stdout
    assert re.search(r"\d+ checks, 0 failures", result.stdout)


@pytest.mark.skipif(shutil.which("clang++") is None, reason="clang++ not installed")
def test_fuzz_decoders_for_30_seconds(tmp_path):
    from test_fuzz import FUZZ_SEED, build_fuzzer, write_regression_corpus

    exe = build_fuzzer("fuzz_decode")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    _write_vectors(seeds)
    for path in seeds.glob("*.f32"):
        path.unlink()
    write_regression_corpus("fuzz_decode", seeds)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = subprocess.run(
        [str(exe), "-max_total_time=30", FUZZ_SEED, "-rss_limit_mb=2048", "-print_final_stats=1",
         f"-artifact_prefix={tmp_path}/", str(corpus), str(seeds)],
        capture_output=True, text=True, timeout=240)
    log = result.stderr
    assert result.returncode == 0, log[-6000:]
    runs = re.search(r"Done (\d+) runs", log)
    assert runs and int(runs.group(1)) > 1000, log[-3000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("oom-*"))
