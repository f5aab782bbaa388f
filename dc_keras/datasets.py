"""Datasets for examples, tests and benchmarks, read locally (these machines have no dataset downloads).

``fashion_mnist()`` reads the IDX files of the Debian package ``dataset-fashion-mnist`` with a small IDX
reader that validates magic numbers and sizes, and falls back to ``keras.datasets.fashion_mnist.load_data()``
where the files are absent.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

__all__ = ["IDXError", "read_idx", "fashion_mnist", "FASHION_MNIST_DIR"]

# Where Debian's dataset-fashion-mnist installs the files; DC_KERAS_FASHION_MNIST_DIR overrides it.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/ "THE IDX FILE FORMAT").
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class IDXError(ValueError):
    """An IDX file is malformed: wrong magic number, truncated, trailing bytes, or unexpected shape."""


def _read_bytes(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise
    except (EOFError, OSError, zlib.error) as error:  # truncated gzip: EOFError; corrupt: BadGzipFile/zlib.error
        raise IDXError(f"{path}: cannot decompress/read ({type(error).__name__}: {error})") from error


def read_idx(path: Union[str, os.PathLike], expected_ndim: Optional[int] = None) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed, by its ``.gz`` suffix) into a numpy array.

    Checks the magic number (two zero bytes, a known type byte, the number of dimensions), that the data
    size is exactly the product of the dimensions, and ``expected_ndim`` when given. Raises
    FileNotFoundError for a missing file and :class:`IDXError` (a ValueError) naming the file otherwise.
    Values come back in native byte order; uint8 files stay uint8.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IDXError(f"{path}: {len(data)} bytes, too short for an IDX header (truncated file?)")
    zero0, zero1, type_code, ndim = struct.unpack(">BBBB", data[:4])
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES:
        raise IDXError(f"{path}: bad IDX magic number 0x{data[:4].hex()} (expected 0x0000TTNN with a known type "
                       "byte TT): not an IDX file")
    if ndim == 0:
        raise IDXError(f"{path}: IDX header declares 0 dimensions")
    if expected_ndim is not None and ndim != expected_ndim:
        raise IDXError(f"{path}: {ndim}-dimensional IDX data, expected {expected_ndim} dimensions")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IDXError(f"{path}: truncated IDX header ({len(data)} bytes, {header_size} needed for {ndim} dims)")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_size
    if actual < expected:
        raise IDXError(f"{path}: truncated: header declares shape {shape} ({expected} data bytes) but the file has "
                       f"{actual}")
    if actual > expected:
        raise IDXError(f"{path}: {actual - expected} unexpected trailing bytes after shape {shape}")
    array = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape, dtype=np.int64)), offset=header_size)
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def _load_split(directory: Path, split: str) -> Tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = _FILES[split]
    images = read_idx(directory / images_name, expected_ndim=3)
    labels = read_idx(directory / labels_name, expected_ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise IDXError(f"{directory}: Fashion-MNIST files must hold unsigned bytes, got {images.dtype} images and "
                       f"{labels.dtype} labels")
    if images.shape[1:] != (28, 28):
        raise IDXError(f"{directory / images_name}: images are {images.shape[1:]}, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise IDXError(f"{directory}: {images.shape[0]} images in {images_name} but {labels.shape[0]} labels in "
                       f"{labels_name}")
    if labels.size and labels.max() > 9:
        raise IDXError(f"{directory / labels_name}: label {int(labels.max())} out of range 0-9")
    return images, labels


def fashion_mnist(directory: Union[str, os.PathLike, None] = None):
    """Fashion-MNIST as ``(x_train, y_train), (x_test, y_test)``, the same arrays as
    ``keras.datasets.fashion_mnist.load_data()``: uint8 images of shape (n, 28, 28) and uint8 labels 0-9.

    Reads the four ``*-ubyte.gz`` files from ``directory``, else ``$DC_KERAS_FASHION_MNIST_DIR``, else
    ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``). When none of the files
    is there, falls back to Keras's downloader. A directory with only some of the files, or a malformed
    file, raises an error naming the file rather than silently downloading.
    """
    if directory is None:
        directory = os.environ.get("DC_KERAS_FASHION_MNIST_DIR") or FASHION_MNIST_DIR
    directory = Path(directory)
    names = [name for pair in _FILES.values() for name in pair]
    present = [name for name in names if (directory / name).exists()]
    if not present:
        import keras  # only needed for the fallback

        return keras.datasets.fashion_mnist.load_data()
    missing = sorted(set(names) - set(present))
    if missing:
        raise FileNotFoundError(f"{directory}: Fashion-MNIST is incomplete, missing {', '.join(missing)}")
    return _load_split(directory, "train"), _load_split(directory, "test")
