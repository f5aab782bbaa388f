"""dc-benchmark (dc_keras/benchmark.py, dc_keras/cli/benchmark.py) on a small exported conv model: every
configuration runs, the delegate's numbers sit beside the baselines', JSON and table output, baselines found
beside the model or reported missing."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from test_export_models import prune_and_share

import dc_keras
from dc_keras import benchmark, delegate

ROWS = ["dc delegate", "TFLite, no delegate", "XNNPACK float", "XNNPACK int8 dyn."]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    model = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
                              keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                              keras.layers.Dense(10, name="fc")])
    for layer in (model.get_layer("c1"), model.get_layer("fc")):
        kernel, bias = layer.get_weights()
        layer.set_weights([prune_and_share(kernel, 0.5, 8), bias])
    out = tmp_path_factory.mktemp("bench")
    dc_keras.export_tflite(model, out / "model.tflite", dense_path=out / benchmark.DENSE_NAME, min_rate=0.0)
    written = benchmark.write_baselines(model, out, dense=False)
    assert list(written) == [benchmark.INT8_NAME]
    return out / "model.tflite"


def test_run_benchmark_times_every_configuration(exported):
    result = benchmark.run_benchmark(exported, num_runs=5, warmup_runs=1)
    assert [r.name for r in result.rows] == ROWS
    for row in result.rows:
        assert row.median_ms > 0 and row.p90_ms >= row.median_ms
        assert row.file_bytes == (exported.parent / row.model.split("/")[-1]).stat().st_size
    sizes = {r.name: r.file_bytes for r in result.rows}
    assert sizes["dc delegate"] < sizes["XNNPACK int8 dyn."] < sizes["XNNPACK float"]
    assert result.dc_nodes == 2 and result.resident_weight_bytes > 0
    assert result.max_abs_diff_vs_dense < 1e-4  # the compressed model computes the same function
    assert result.missing == []
    text = result.format()
    assert "vs XNNPACK float" in text
    assert result.simd_path == delegate.simd_path()
    assert f"dc delegate SIMD path: {result.simd_path}" in text
    assert f"dc delegate block-sparse FC path: {delegate.block_simd_path()}" in text
    fastest = min(result.rows[1:], key=lambda r: r.median_ms)
    assert f"dc delegate / fastest baseline ({fastest.name}): {result.rows[0].median_ms / fastest.median_ms:.3f}" in text


def test_cli_json(exported):
    run = subprocess.run([sys.executable, "-m", "dc_keras.benchmark", "--json", "--num_runs=3", "--warmup_runs=1",
                          "--batch=2", str(exported)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(run.stdout)
    assert [r["name"] for r in data["rows"]] == ROWS
    assert data["num_threads"] == 1 and data["batch"] == 2 and data["num_runs"] == 3
    assert all(r["median_ms"] > 0 for r in data["rows"])


def test_cli_reports_missing_baselines_and_missing_model(exported, tmp_path):
    alone = tmp_path / "alone.tflite"
    shutil.copy(exported, alone)
    run = subprocess.run([sys.executable, "-m", "dc_keras.cli.benchmark", "--num_runs=2", "--warmup_runs=0",
                          str(alone)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    table = run.stdout
    assert "dc delegate" in table and "missing" in table
    assert "dense float baseline" in table and "--dense_model" in table and "--int8_model" in table
    assert str(tmp_path / benchmark.DENSE_NAME) in table
    gone = subprocess.run([sys.executable, "-m", "dc_keras.cli.benchmark", str(tmp_path / "nope.tflite")],
                          capture_output=True, text=True, timeout=600)
    assert gone.returncode == 2 and "no such file" in gone.stderr


def test_find_baselines_prefers_given_paths(exported, tmp_path):
    dense, int8, missing = benchmark.find_baselines(exported)
    assert dense.name == benchmark.DENSE_NAME and int8.name == benchmark.INT8_NAME and not missing
    dense, int8, missing = benchmark.find_baselines(exported, dense_model=tmp_path / "x.tflite")
    assert dense is None and int8 is not None and "as given" in missing[0]


class _RecordingInterpreter:
    """Stands in for an Interpreter: records which configuration each invoke() belonged to."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def invoke(self):
        self.log.append(self.name)


def test_interleaved_timing_takes_turns_in_blocks():
    log = []
    fakes = [_RecordingInterpreter(n, log) for n in "abc"]
    runs, block = 25, benchmark.INTERLEAVE_BLOCK
    stats = benchmark._time_all(fakes, num_runs=runs, warmup=2, interleave=True)
    assert len(stats) == 3 and all(median >= 0 and p90 >= median for median, p90, _ in stats)
    # first turn: warm-up then a block each; the last turn is the remainder of the runs
    want = []
    for start in range(0, runs, block):
        for n in "abc":
            want += [n] * ((2 if start == 0 else 0) + min(block, runs - start))
    assert log == want
    log.clear()
    benchmark._time_all(fakes, num_runs=runs, warmup=2, interleave=False)
    assert log == ["a"] * (runs + 2) + ["b"] * (runs + 2) + ["c"] * (runs + 2)


def test_run_benchmark_one_after_another(exported):
    result = benchmark.run_benchmark(exported, num_runs=3, warmup_runs=0, interleave=False)
    assert not result.interleaved and "one configuration after another" in result.format()
    assert [r.name for r in result.rows] == ROWS and all(r.median_ms > 0 for r in result.rows)
    assert benchmark.run_benchmark(exported, num_runs=3, warmup_runs=0).interleaved


def _cli(*args):
    import os

    return subprocess.run([sys.executable, "-m", "dc_keras.cli.benchmark", "--num_runs=2", "--warmup_runs=0",
                           *map(str, args)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def _ours(stderr):
    return [line for line in stderr.splitlines() if line.startswith("dc-benchmark")]  # not TF's log lines


def test_garbage_baseline_is_skipped_with_its_name_not_blamed_on_the_model(exported, tmp_path):
    model = tmp_path / "model.tflite"
    shutil.copy(exported, model)
    shutil.copy(exported.parent / benchmark.INT8_NAME, tmp_path / benchmark.INT8_NAME)
    garbage = tmp_path / benchmark.DENSE_NAME
    garbage.write_bytes(b"this is not a flatbuffer" * 8)
    result = benchmark.run_benchmark(model, num_runs=2, warmup_runs=0)
    assert len(result.skipped) == 1 and result.skipped[0].startswith(f"dense float baseline {garbage}: ")
    rows = {r.name: r for r in result.rows}
    assert rows["dc delegate"].median_ms > 0 and rows["XNNPACK int8 dyn."].median_ms > 0
    for name in ("TFLite, no delegate", "XNNPACK float"):
        assert rows[name].median_ms is None and rows[name].note == "skipped (cannot run)"
    assert f"skipped: dense float baseline {garbage}" in result.format()

    run = _cli(model)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    warnings = _ours(run.stderr)
    assert len(warnings) == 1 and warnings[0].startswith(f"dc-benchmark: warning: skipped the dense float baseline "
                                                         f"{garbage}: ")
    assert "dc delegate" in run.stdout and "skipped (cannot run)" in run.stdout


def test_garbage_model_and_garbage_keras_model_are_one_line_errors(exported, tmp_path):
    bad_model = tmp_path / "bad.tflite"
    bad_model.write_bytes(b"garbage" * 10)
    run = _cli(bad_model)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = _ours(run.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"dc-benchmark: error: {bad_model}: ")

    model = tmp_path / "model.tflite"
    shutil.copy(exported, model)
    keras_file = tmp_path / "broken.keras"
    keras_file.write_bytes(b"not a zip archive")
    run = _cli(f"--keras_model={keras_file}", model)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert _ours(run.stderr) and _ours(run.stderr)[0].startswith(
        f"dc-benchmark: error: --keras_model {keras_file}: cannot load it as a Keras model: ")
    assert len(_ours(run.stderr)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tflite", "broken.keras", "model.tflite"]
