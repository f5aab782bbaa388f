"""The IDX reader and the Fashion-MNIST loader, on small synthetic IDX files (no dataset needed)."""
import gzip
import struct

import numpy as np
import pytest

from dc_keras import datasets
from dc_keras.datasets import IDXError, fashion_mnist, read_idx

_TYPE_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
               np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(array, dtype=None):
    """Encode ``array`` as IDX (big-endian header and data)."""
    dtype = np.dtype(dtype or array.dtype)
    big = dtype.newbyteorder(">") if dtype.itemsize > 1 else dtype
    header = struct.pack(">BBBB", 0, 0, _TYPE_CODES[big], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.asarray(array, dtype=big).tobytes()


def write(path, data, compress=None):
    compress = path.suffix == ".gz" if compress is None else compress
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def make_fashion_dir(directory, n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write(directory / name, idx_bytes(array))
    return arrays


def test_fashion_mnist_reads_idx_files(tmp_path):
    arrays = make_fashion_dir(tmp_path)
    (x_train, y_train), (x_test, y_test) = fashion_mnist(tmp_path)
    for got, name in [(x_train, "train-images-idx3-ubyte.gz"), (y_train, "train-labels-idx1-ubyte.gz"),
                      (x_test, "t10k-images-idx3-ubyte.gz"), (y_test, "t10k-labels-idx1-ubyte.gz")]:
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[name])
    assert x_train.shape == (6, 28, 28) and y_test.shape == (4,)


def test_environment_variable_selects_directory(tmp_path, monkeypatch):
    arrays = make_fashion_dir(tmp_path, n_train=3, n_test=2)
    monkeypatch.setenv("DC_KERAS_FASHION_MNIST_DIR", str(tmp_path))
    (x_train, _), _ = fashion_mnist()
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte.gz"])


def test_falls_back_to_keras_when_files_are_absent(tmp_path, monkeypatch):
    import keras

    sentinel = ((np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8)),) * 2
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", lambda: sentinel)
    assert fashion_mnist(tmp_path / "empty") is sentinel


def test_incomplete_directory_names_missing_files(tmp_path):
    make_fashion_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        fashion_mnist(tmp_path)


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("suffix", [".gz", ""])
def test_read_idx_round_trips_all_types(tmp_path, dtype, suffix):
    rng = np.random.default_rng(3)
    array = (rng.normal(size=(3, 4, 5)) * 50).astype(np.dtype(dtype).newbyteorder("="))
    path = write(tmp_path / f"data.idx{suffix}", idx_bytes(array, dtype))
    got = read_idx(path)
    assert got.dtype == array.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_truncated_data_names_the_file(tmp_path):
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    path = write(tmp_path / "train-images-idx3-ubyte.gz", data[:-10])
    with pytest.raises(IDXError, match=r"train-images-idx3-ubyte\.gz.*truncated"):
        read_idx(path)


def test_truncated_gzip_stream_names_the_file(tmp_path):
    compressed = gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    path = tmp_path / "broken.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(IDXError, match="broken.gz"):
        read_idx(path)


@pytest.mark.parametrize("header,match", [
    (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
    (b"\x00\x00", "too short"),
    (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated IDX header"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x01\x02\x03", "trailing"),
])
def test_malformed_headers(tmp_path, header, match):
    path = write(tmp_path / "bad.idx", header)
    with pytest.raises(IDXError, match=match) as info:
        read_idx(path)
    assert "bad.idx" in str(info.value)


def test_wrong_file_kind_and_inconsistent_sets(tmp_path):
    make_fashion_dir(tmp_path)
    # labels where images are expected: 1-D instead of 3-D
    write(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(np.zeros(6, np.uint8)))
    with pytest.raises(IDXError, match=r"train-images-idx3-ubyte\.gz.*expected 3"):
        fashion_mnist(tmp_path)
    make_fashion_dir(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(IDXError, match="6 images.*5 labels"):
        fashion_mnist(tmp_path)
    make_fashion_dir(tmp_path)
    write(tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros((4, 32, 32), np.uint8)))
    with pytest.raises(IDXError, match="28x28"):
        fashion_mnist(tmp_path)
    make_fashion_dir(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.full(4, 12, np.uint8)))
    with pytest.raises(IDXError, match="label 12"):
        fashion_mnist(tmp_path)
    make_fashion_dir(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(4, np.int32)))
    with pytest.raises(IDXError, match="unsigned bytes"):
        fashion_mnist(tmp_path)


def test_missing_single_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


@pytest.mark.skipif(not (datasets.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_installed_fashion_mnist_test_labels_are_valid():
    labels = read_idx(datasets.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz", expected_ndim=1)
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)
