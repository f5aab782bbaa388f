"""Tests of benchmarks/baselines.py (the tfmot baseline the pipeline is compared with) on synthetic data."""
import gzip
import importlib.util
import json
import os
import struct

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "baselines.py")


@pytest.fixture(scope="module")
def baselines():
    spec = importlib.util.spec_from_file_location("dc_keras_baselines", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_and_loader(baselines, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28))
    labels = np.arange(5) % 10
    for prefix, n in (("train", 5), ("t10k", 5)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images[:n])
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels[:n])
    (x, y), (xt, yt) = baselines.load_fashion_mnist(str(tmp_path))
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(yt, labels)

    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")  # float IDX: not what Fashion-MNIST uses
    with pytest.raises(ValueError, match="unsigned-byte"):
        baselines._read_idx(str(tmp_path / "bad.gz"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        baselines.load_fashion_mnist(str(tmp_path / "nowhere"))


def test_compressed_sizes(baselines):
    data = bytes(10_000)
    sizes = baselines.compressed_sizes(data)
    assert sizes["raw"] == 10_000
    assert sizes["gzip"] == len(gzip.compress(data, compresslevel=9)) < 100
    assert sizes["xz"] < 200


def test_baseline_results_on_tiny_synthetic_data(baselines, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((300, 28, 28, 1), dtype=np.float32)
    y = (x[:, :10, 0, 0].argmax(axis=1)).astype(np.int64)
    data = ((x[:240], y[:240]), (x[240:], y[240:]))
    # two of the six variants keep the test short; the others only differ by converter flags
    result = baselines.baseline_results("lenet300", epochs=1, prune_epochs=1, cluster_epochs=1, clusters=16,
                                        data=data, out_dir=str(tmp_path), verbose=0,
                                        variants=["pc_float", "pc_float_sparsity"])
    names = [v["name"] for v in result["variants"]]
    assert names == ["dense_float", "pc_float", "pc_float_sparsity"]
    by_name = {v["name"]: v for v in result["variants"]}
    assert by_name["dense_float"]["ratio_raw"] == 1.0
    # pruned to 90% and clustered: sparse formats and general-purpose compressors shrink the file
    assert all(s == pytest.approx(0.9, abs=0.01) for s in result["kernel_sparsity"].values())
    assert all(d <= 16 + 1 for d in result["distinct_values"].values())
    assert by_name["pc_float_sparsity"]["raw"] < by_name["pc_float"]["raw"] / 3
    assert by_name["pc_float"]["xz"] < by_name["dense_float"]["xz"] / 5
    for v in result["variants"]:
        assert 0.0 <= v["accuracy"] <= 1.0
        assert v["raw"] / v["xz"] == pytest.approx(v["ratio_xz"] / v["ratio_raw"])
        assert os.path.getsize(tmp_path / f"lenet300_{v['name']}.tflite") == v["raw"]
    # Keras and .tflite agree on the float files
    assert by_name["pc_float"]["accuracy"] == pytest.approx(result["keras_accuracy"]["clustered"], abs=0.02)
    assert result["best"]["ratio"] == max(v[f"ratio_{k}"] for v in result["variants"] if v["name"].startswith("pc_")
                                          for k in ("raw", "gzip", "xz"))
    json.dumps(result)  # JSON-serialisable for --json
    table = baselines.format_table(result)
    assert "pc_float_sparsity" in table and "best:" in table

    with pytest.raises(ValueError, match="unknown model"):
        baselines.baseline_results("vgg", data=data)
    with pytest.raises(ValueError, match="sparsity"):
        baselines.baseline_results("lenet300", sparsity=1.0, data=data)
    with pytest.raises(ValueError, match="unknown variants"):
        baselines.baseline_results("lenet300", variants=["pc_float", "fp16"], data=data)
