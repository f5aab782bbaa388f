"""Runs .tflite files on the emulated aarch64 stack (see arm64_stack.py) in ONE process, because starting
the emulated python costs seconds: every job of a JSON job file, each on its own LiteRT Interpreter.

    qemu-aarch64 -L SYSROOT SYSROOT/usr/bin/python3.11 arm64_runner.py JOBS.json

Needs only numpy and ai_edge_litert (the aarch64 wheels), never dc_keras. JOBS.json:

    {"delegate": "/path/aarch64/libdc_delegate.so",
     "inputs": "/path/inputs.npz",                  # arrays named by the jobs' "input" keys
     "outputs": "/path/outputs.npz",                # written: one array per job that ran, named by the job
     "report": "/path/report.json",                 # written: simd path, per-job errors / nodes / timings
     "benchmark_module": "/path/dc_keras/benchmark.py",   # only for timed jobs: its timing loop is reused
     "jobs": [{"name": "lenet/sparse/t1", "model": "/path/m.tflite", "input": "lenet",
               "use_delegate": true, "mode": "sparse", "threads": 1,
               "num_runs": 0, "warmup_runs": 0, "batch": null}]}

A job whose interpreter fails records the error message instead of an output (the no-delegate control is
expected to fail with TFLite's "unresolved custom op").
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import platform
import sys
import traceback

import numpy as np


def _delegate_library(path):
    library = ctypes.CDLL(path)
    library.dc_delegate_simd_path.restype = ctypes.c_char_p
    library.dc_delegate_block_simd_path.restype = ctypes.c_char_p
    library.dc_delegate_claimed_nodes.restype = ctypes.c_int
    library.dc_delegate_claimed_nodes.argtypes = [ctypes.c_void_p]
    library.dc_delegate_resident_weight_bytes.restype = ctypes.c_uint64
    library.dc_delegate_resident_weight_bytes.argtypes = [ctypes.c_void_p]
    return library


def _load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def _run_job(job, spec, inputs, library, benchmark):
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    threads = int(job.get("threads", 1))
    delegates, dc = [], None
    if job.get("use_delegate", True):
        dc = load_delegate(spec["delegate"], {"num_threads": str(threads), "mode": job.get("mode", "sparse")})
        delegates.append(dc)
    interpreter = Interpreter(model_path=job["model"], experimental_delegates=delegates, num_threads=threads)
    result = {}
    if job.get("num_runs"):
        if benchmark is None:
            raise ValueError("timed jobs need 'benchmark_module'")
        arrays = benchmark._inputs(interpreter.get_input_details(), job.get("batch"), int(job.get("seed", 0)))
        benchmark._prepare(interpreter, arrays)
        median, p90, mean = benchmark._time_all([interpreter], int(job["num_runs"]), int(job.get("warmup_runs", 0)),
                                                interleave=False)[0]
        result.update(median_ms=median, p90_ms=p90, mean_ms=mean)
    else:
        x = inputs[job["input"]]
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], x.astype(detail["dtype"], copy=False))
        interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()
    if dc is not None:
        pointer = ctypes.cast(dc._delegate_ptr, ctypes.c_void_p).value
        result["claimed_nodes"] = int(library.dc_delegate_claimed_nodes(pointer))
        result["resident_weight_bytes"] = int(library.dc_delegate_resident_weight_bytes(pointer))
    return output, result


def main(argv):
    """Runs the jobs of argv[0] (a JSON job file) and writes its outputs and report files."""
    with open(argv[0]) as handle:
        spec = json.load(handle)
    library = _delegate_library(spec["delegate"])
    inputs = dict(np.load(spec["inputs"])) if spec.get("inputs") else {}
    benchmark = _load_module(spec["benchmark_module"], "dc_benchmark") if spec.get("benchmark_module") else None
    report = {"machine": platform.machine(), "simd_path": library.dc_delegate_simd_path().decode(),
              "block_simd_path": library.dc_delegate_block_simd_path().decode(), "jobs": {}}
    outputs = {}
    for job in spec["jobs"]:
        try:
            output, result = _run_job(job, spec, inputs, library, benchmark)
            outputs[job["name"]] = output
            result["error"] = None
        except Exception as error:  # recorded per job: the control run is expected to fail
            result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-2000:]}
        report["jobs"][job["name"]] = result
    np.savez(spec["outputs"], **outputs)
    with open(spec["report"], "w") as handle:
        json.dump(report, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
