"""benchmarks/run_all.py: the machine heading and the readers that turn benchmark output into table cells."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import run_all  # noqa: E402


def test_machine_line_names_cpus_and_simd():
    line = run_all.machine()
    assert f"{os.cpu_count()} logical CPUs" in line and "SIMD:" in line and "load average" in line


def test_table_heading_and_rows():
    rows = [{"what": "codec", "command": "benchmarks/codec.py", "ours": "1 G/s", "baseline": "zstd 2 G/s",
             "seconds": 3.2, "machine_dependent": True},
            {"what": "sizes", "command": "benchmarks/file_overhead.py", "ours": "1 B", "baseline": "2 B",
             "seconds": 1.0, "machine_dependent": False}]
    text = run_all.table(rows, "Results on X")
    assert text.splitlines()[0] == "Results on X"
    assert "| codec | `python benchmarks/codec.py` | 1 G/s | zstd 2 G/s | 3 s |" in text
    assert "sizes (machine-independent)" in text


def test_readers_take_figures_from_benchmark_output():
    pruning = ("ratios                    wall    cpu\n  dc_keras / keras plain    0.35   1.06  target <= 1.25\n"
               "  tfmot / tf_keras plain    0.66   1.21  \n")
    assert run_all.read_pruning(pruning, None)[0] == "dc_keras pruning / plain Keras 3 fit: 0.35 wall, 1.06 CPU"
    reliability = ("| attack class | cases | ok | crash | hang | silent wrong |\n|---|---:|---:|---:|---:|---:|\n"
                   "| blobs | 4 | 3 | 1 | · | · |\n| cli | 2 | 2 | · | · | · |\n")
    assert run_all.read_reliability(reliability, None)[0] == "6 cases, 5 ok, 1 crash, 0 hang, 0 silent wrong"
    compare = {"comparison": {"ours": {"size": 100, "ratio": 50.0, "dense_size": 5000, "dense_accuracy": 0.9,
                                       "accuracy": 0.91},
                              "baseline_best": {"variant": "pc", "compressor": "xz", "size": 300, "accuracy": 0.9},
                              "advantage": 3.0, "seconds": {"dc_compress": 12}},
               "ours": {"weights_all": {"rate_pqh": 0.01}}}
    ours, baseline = run_all.read_compare("", compare)
    assert "**50.0x**" in ours and "weights alone (P+Q+H) 100.0x" in ours and "**3.00x** smaller" in baseline
    with pytest.raises(ValueError):
        run_all.read_codec("no figures here", None)
    conv = [{"title": "1x1 conv 256->256 on 16x16, 90% sparse", "medians_s": {
        "dc (block)": 1.35e-4, "dc (unstructured)": 1.44e-4, "stock int8 dynamic-range, XNNPACK": 9.1e-5,
        "stock float32, XNNPACK": 2.95e-4}}]
    ours, baseline = run_all.read_conv_block_latency("", conv)
    assert ours == "1x1 conv 256->256: block 0.135 ms, unstructured 0.144 ms"
    assert baseline == "XNNPACK (same run) 1x1 conv 256->256: int8 0.091 ms, float 0.295 ms"
