"""Latency of a compressed .tflite through the dc delegate beside the usual baselines, in one run.

Configurations (each on its own interpreter, same random inputs, `num_threads` threads, warm-up then N timed
invocations; median and p90 reported). By default the configurations take turns in blocks of a few
invocations, so a slow phase of a shared machine (or a phone warming up) hits all of them alike instead of
whichever ran at that moment; `interleave=False` (dc-benchmark --nointerleave) times them one after another.

  dc delegate          the compressed file; dc ops on libdc_delegate.so (mode=sparse: computing on the P+Q
                       form), the remaining stock ops (pooling, reshapes) on TFLite's default CPU path
  TFLite, no delegate  the dense float .tflite on TFLite's builtin kernels without XNNPACK ("without the
                       delegate": the compressed file itself cannot run without it)
  XNNPACK float        the dense float .tflite with TFLite's default XNNPACK delegate
  XNNPACK int8 dyn.    the dynamic-range int8 .tflite (int8 weights, float activations) with the default
                       resolver (XNNPACK where it takes the ops, TFLite's hybrid kernels elsewhere)

Baseline files come from arguments or, when omitted, from dense.tflite / dense_int8.tflite beside the model;
`write_baselines` makes both from the Keras model. Command line: dc-benchmark (dc_keras/cli/benchmark.py) or
`python -m dc_keras.benchmark`.

`run_emulated_benchmark` (dc-benchmark --arm64_emulated) times the dc model on the real aarch64 LiteRT runtime
with the aarch64 delegate under qemu-user (tflite_delegate/tools/arm64_stack.py): it shows that the model runs
there and which SIMD path the kernels take; its timings measure the emulator, not an ARM CPU.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

DENSE_NAME = "dense.tflite"
EMULATED_NOTE = "emulated (qemu) — not for comparison"
INT8_NAME = "dense_int8.tflite"


@dataclasses.dataclass
class Row:
    """One configuration's result; latencies in milliseconds (None when it did not run)."""

    name: str
    model: Optional[str]
    file_bytes: Optional[int]
    median_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    mean_ms: Optional[float] = None
    note: str = ""


@dataclasses.dataclass
class BenchmarkResult:
    model: str
    num_threads: int
    num_runs: int
    warmup_runs: int
    batch: Optional[int]
    interleaved: bool
    rows: List[Row]
    resident_weight_bytes: Optional[int]  # the dc delegate's decoded weights (P+Q form)
    dc_nodes: Optional[int]               # TFLite nodes the dc delegate claimed
    max_abs_diff_vs_dense: Optional[float]
    missing: List[str]
    simd_path: Optional[str] = None       # the delegate's kernels: "neon", "avx2+fma+bmi2", "portable", ...
    block_simd_path: Optional[str] = None  # its block-sparse FC loops: "avx512", "avx2", "neon", "portable"
    emulated: bool = False                # timed under qemu-user (arm64_emulated): not comparable
    skipped: List[str] = dataclasses.field(default_factory=list)  # baselines found but not runnable, and why

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["rows"] = [dataclasses.asdict(r) for r in self.rows]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        """The result as a text table (what dc-benchmark prints)."""
        reference = next((r for r in self.rows if r.name == "XNNPACK float" and r.median_ms), None)
        head = ("configuration", "file", "size B", "median ms", "p90 ms", "vs XNNPACK float")
        lines_rows = []
        for r in self.rows:
            ratio = ""
            if reference and r.median_ms:
                factor = r.median_ms / reference.median_ms
                ratio = f"{1 / factor:.2f}x faster" if factor < 1 else f"{factor:.2f}x slower"
                if r is reference:
                    ratio = "1.00x"
            lines_rows.append((r.name, Path(r.model).name if r.model else "-",
                               f"{r.file_bytes:,}" if r.file_bytes is not None else "-",
                               f"{r.median_ms:.4g}" if r.median_ms is not None else "-",
                               f"{r.p90_ms:.4g}" if r.p90_ms is not None else "-", ratio or r.note))
        widths = [max(len(str(row[i])) for row in [head, *lines_rows]) for i in range(len(head))]
        fmt = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
        lines = [f"{self.model}: {self.num_threads} thread(s), batch {self.batch or 'as in file'}, "
                 f"{self.num_runs} timed runs after {self.warmup_runs} warm-up"
                 f"{', configurations interleaved' if self.interleaved else ', one configuration after another'}",
                 fmt(head), fmt(["-" * w for w in widths]), *map(fmt, lines_rows)]
        ours = next((r for r in self.rows if r.name == "dc delegate" and r.median_ms), None)
        baselines = [r for r in self.rows if r.name != "dc delegate" and r.median_ms]
        if ours and baselines:
            fastest = min(baselines, key=lambda r: r.median_ms)
            lines.append(f"dc delegate / fastest baseline ({fastest.name}): {ours.median_ms / fastest.median_ms:.3f}")
        if self.simd_path is not None:
            lines.append(f"dc delegate SIMD path: {self.simd_path}")
        if self.block_simd_path is not None:
            lines.append(f"dc delegate block-sparse FC path: {self.block_simd_path}")
        if self.emulated:
            lines.append(f"timings: {EMULATED_NOTE}")
        if self.resident_weight_bytes is not None:
            lines.append(f"dc delegate: {self.dc_nodes} node(s), resident decoded weights "
                         f"{self.resident_weight_bytes:,} B")
        if self.max_abs_diff_vs_dense is not None:
            # Near zero when the dense file holds the same pruned and clustered weights (export_tflite's
            # dense_path); dc-compress's dense.tflite is the uncompressed baseline, a different model.
            lines.append(f"max |dc - dense float| over the outputs: {self.max_abs_diff_vs_dense:.3g} "
                         "(a check only when the dense file has the compressed model's weights; "
                         "dc-compress's dense.tflite is the uncompressed baseline)")
        if self.missing:
            lines.append("missing: " + "; ".join(self.missing))
        if self.skipped:
            lines.append("skipped: " + "; ".join(self.skipped))
        return "\n".join(lines)


def find_baselines(model: Path, dense_model=None, int8_model=None) -> tuple:
    """(dense path or None, int8 path or None, list of messages about missing files)."""
    missing = []
    found = []
    for given, default, what in ((dense_model, DENSE_NAME, "dense float"), (int8_model, INT8_NAME, "int8")):
        path = Path(given) if given else model.parent / default
        if path.is_file():
            found.append(path)
        else:
            found.append(None)
            flag = "--dense_model" if what == "dense float" else "--int8_model"
            missing.append(f"{what} baseline {path} not found ({'as given' if given else f'pass {flag}'} or "
                           "write it with dc_keras.benchmark.write_baselines / dc-benchmark --keras_model)")
    return found[0], found[1], missing


def write_baselines(keras_model, directory, dense: bool = True, int8: bool = True) -> Dict[str, Path]:
    """Writes the comparison files of `keras_model` beside a compressed model: dense.tflite (the converter's
    float32 output, what export_tflite's dense_path gives) and dense_int8.tflite (dynamic-range quantization:
    int8 weights, float activations; TFLiteConverter with Optimize.DEFAULT and no representative dataset)."""
    from dc_keras.export import flatbuffer
    from dc_keras.pipeline import tflite_from_keras

    directory = Path(directory)
    written = {}
    for wanted, name, int8_weights in ((dense, DENSE_NAME, False), (int8, INT8_NAME, True)):
        if wanted:
            written[name] = flatbuffer.write_atomic(directory / name, tflite_from_keras(keras_model, int8=int8_weights))
    return written


def _inputs(details: Sequence[dict], batch: Optional[int], seed: int) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for d in details:
        shape = [int(s) for s in d["shape_signature"]] if len(d.get("shape_signature", [])) else list(d["shape"])
        shape = [int(d["shape"][i]) if s < 0 else s for i, s in enumerate(shape)]
        if batch is not None and shape:
            shape[0] = batch
        dtype = np.dtype(d["dtype"])
        if np.issubdtype(dtype, np.integer):  # token ids: small non-negative values are valid for any table
            arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def _prepare(interpreter, inputs: List[np.ndarray]) -> None:
    details = interpreter.get_input_details()
    if len(details) != len(inputs):
        raise ValueError(f"models disagree on their number of inputs ({len(details)} vs {len(inputs)})")
    for d, x in zip(details, inputs):
        if list(d["shape"]) != list(x.shape):
            interpreter.resize_tensor_input(d["index"], list(x.shape))
    interpreter.allocate_tensors()
    for d, x in zip(details, inputs):
        interpreter.set_tensor(d["index"], x.astype(d["dtype"], copy=False))


# Invocations per turn when the configurations are interleaved: short enough that every configuration sees the
# same phases of the machine, long enough that most timed calls find the caches as their own last call left them.
INTERLEAVE_BLOCK = 10


def _time_all(interpreters: Sequence, num_runs: int, warmup: int, interleave: bool) -> List[tuple]:
    """(median, p90, mean) milliseconds per interpreter over `num_runs` timed invocations each."""
    times = [np.empty(num_runs) for _ in interpreters]
    order = [(k, 0, num_runs) for k in range(len(interpreters))]
    if interleave:
        order = [(k, start, min(num_runs, start + INTERLEAVE_BLOCK))
                 for start in range(0, num_runs, INTERLEAVE_BLOCK) for k in range(len(interpreters))]
    warmed = set()
    for k, start, stop in order:
        interpreter = interpreters[k]
        if k not in warmed:
            for _ in range(warmup):
                interpreter.invoke()
            warmed.add(k)
        for i in range(start, stop):
            t0 = time.perf_counter_ns()
            interpreter.invoke()
            times[k][i] = (time.perf_counter_ns() - t0) / 1e6
    return [(float(np.median(t)), float(np.percentile(t, 90)), float(np.mean(t))) for t in times]


def _outputs(interpreter) -> List[np.ndarray]:
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def run_benchmark(model, dense_model=None, int8_model=None, num_runs: int = 100, warmup_runs: int = 10,
                  num_threads: int = 1, batch: Optional[int] = None, seed: int = 0,
                  interleave: bool = True) -> BenchmarkResult:
    """Times the compressed `model` through the dc delegate and the baselines (see the module docstring).

    Args:
      model: compressed .tflite written by dc_keras.export_tflite.
      dense_model / int8_model: baseline files; default dense.tflite / dense_int8.tflite beside `model`. A
        missing baseline is reported in `missing`, one that TFLite cannot load or run with the compressed
        model's inputs in `skipped` (naming the file and the error); their rows are left empty.
      num_runs / warmup_runs: timed and untimed invocations per configuration.
      num_threads: threads of the interpreter and of the dc kernels.
      batch: resize the first dimension of every input to this (None: as in the file).
      interleave: let the configurations take turns in blocks of INTERLEAVE_BLOCK invocations (all
        interpreters are then alive at once); False times each configuration in one stretch.

    Raises:
      FileNotFoundError: `model` does not exist.
      ValueError: bad run counts, or `model` itself cannot be loaded or run (TFLite's message).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from dc_keras import delegate

    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no such file")
    if num_runs < 1 or warmup_runs < 0 or num_threads < 1:
        raise ValueError("num_runs and num_threads must be >= 1 and warmup_runs >= 0")
    dense, int8, missing = find_baselines(model, dense_model, int8_model)
    size = lambda p: os.path.getsize(p) if p else None  # noqa: E731

    dc = delegate.load(num_threads=num_threads)
    dc_interpreter = Interpreter(model_path=str(model), experimental_delegates=[dc], num_threads=num_threads)
    inputs = _inputs(dc_interpreter.get_input_details(), batch, seed)
    _prepare(dc_interpreter, inputs)
    baselines = [("TFLite, no delegate", dense, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
                 ("XNNPACK float", dense, OpResolverType.AUTO),
                 ("XNNPACK int8 dyn.", int8, OpResolverType.AUTO)]
    interpreters = {"dc delegate": dc_interpreter}  # the configurations that run, in row order
    skipped = []
    for name, path, resolver in baselines:
        if path is None:
            continue
        try:
            interpreter = Interpreter(model_path=str(path), num_threads=num_threads,
                                      experimental_op_resolver_type=resolver)
            _prepare(interpreter, inputs)
        except (ValueError, RuntimeError) as error:  # not a .tflite, or another model's inputs
            what = "int8" if path == int8 else "dense float"
            message = f"{what} baseline {path}: {' '.join(str(error).split())}"
            if message not in skipped:  # the dense file serves two rows; say it once
                skipped.append(message)
            continue
        interpreters[name] = interpreter

    stats = iter(_time_all(list(interpreters.values()), num_runs, warmup_runs, interleave))
    rows = [Row(name, str(path), size(path), *next(stats)) if name in interpreters
            else Row(name, None if path is None else str(path), size(path),
                     note="missing" if path is None else "skipped (cannot run)")
            for name, path, _ in [("dc delegate", model, None), *baselines]]

    max_diff = None
    if "XNNPACK float" in interpreters:
        dense_out, dc_out = _outputs(interpreters["XNNPACK float"]), _outputs(dc_interpreter)
        if [o.shape for o in dense_out] == [o.shape for o in dc_out]:
            max_diff = max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(dense_out, dc_out))
    resident, nodes = delegate.resident_weight_bytes(dc), delegate.claimed_nodes(dc)
    return BenchmarkResult(model=str(model), num_threads=num_threads, num_runs=num_runs, warmup_runs=warmup_runs,
                           batch=batch, interleaved=interleave, rows=rows, resident_weight_bytes=resident,
                           dc_nodes=nodes, max_abs_diff_vs_dense=max_diff, missing=missing,
                           skipped=skipped, simd_path=delegate.simd_path(),
                           block_simd_path=delegate.block_simd_path())


def _arm64_stack():
    """tflite_delegate/tools/arm64_stack.py of this source tree (a script, loaded as a module)."""
    import importlib.util
    import sys

    from dc_keras import _native

    if "arm64_stack" not in sys.modules:
        path = _native.SOURCE_ROOT / "tflite_delegate" / "tools" / "arm64_stack.py"
        if not path.is_file():
            raise RuntimeError(f"{path} is missing: the arm64 emulation needs dc_keras's source tree")
        spec = importlib.util.spec_from_file_location("arm64_stack", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["arm64_stack"] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules["arm64_stack"]


def run_emulated_benchmark(model, num_runs: int = 100, warmup_runs: int = 10, num_threads: int = 1,
                           batch: Optional[int] = None, seed: int = 0, workdir=None) -> BenchmarkResult:
    """Runs this module's timing loop for the compressed `model` on the aarch64 LiteRT runtime with the
    aarch64-built dc delegate, under qemu-user (the stack is prepared and cached on first use: see
    tflite_delegate/tools/arm64_stack.py). The one row is labelled EMULATED_NOTE: qemu's timings say nothing
    about an ARM CPU; the run proves the model executes there and reports the SIMD path (neon).

    Raises:
      FileNotFoundError: `model` does not exist.
      ValueError: bad run counts.
      RuntimeError: the stack could not be prepared (missing tool, no network on first use) or the emulated
        run failed; the message says which.
    """
    import tempfile

    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no such file")
    if num_runs < 1 or warmup_runs < 0 or num_threads < 1:
        raise ValueError("num_runs and num_threads must be >= 1 and warmup_runs >= 0")
    stack_tools = _arm64_stack()
    stack = stack_tools.prepare()
    job = {"name": "dc", "model": str(model.resolve()), "use_delegate": True, "mode": "sparse",
           "threads": num_threads, "num_runs": num_runs, "warmup_runs": warmup_runs, "batch": batch, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="dc-benchmark-arm64-", dir=workdir) as directory:
        _, report = stack_tools.run_jobs(stack, [job], directory, timed=True)
    result = report["jobs"]["dc"]
    if result["error"] is not None:
        raise RuntimeError(f"on the emulated aarch64 stack: {result['error']}")
    row = Row("dc delegate (aarch64, qemu)", str(model), os.path.getsize(model), result["median_ms"],
              result["p90_ms"], result["mean_ms"], note=EMULATED_NOTE)
    return BenchmarkResult(model=str(model), num_threads=num_threads, num_runs=num_runs, warmup_runs=warmup_runs,
                           batch=batch, interleaved=False, rows=[row],
                           resident_weight_bytes=result["resident_weight_bytes"], dc_nodes=result["claimed_nodes"],
                           max_abs_diff_vs_dense=None, missing=[], simd_path=report["simd_path"],
                           block_simd_path=report.get("block_simd_path"), emulated=True)


if __name__ == "__main__":
    # `python -m dc_keras.benchmark` is the dc-benchmark tool. Run by module name rather than imported, so
    # that this library module does not depend on its own command-line front end (which imports it).
    import runpy

    runpy.run_module("dc_keras.cli.benchmark", run_name="__main__", alter_sys=True)
