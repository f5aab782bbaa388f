"""What a benchmark ran on, and the roofline it is measured against: the CPU model, its SIMD features, the
SIMD paths the dc kernels take, and this machine's copy bandwidth and FMA peak measured by a small C++
program (benchmarks/block_kernels_bench.cc, built against the kernels library and cached).

    from machine import header_lines, measure, roofline_us
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCH_SOURCE = Path(__file__).resolve().parent / "block_kernels_bench.cc"
# Flags as the delegate's own build (dc_keras/_native.py): no -march, the kernels pick their path at run time.
BENCH_FLAGS = ["-std=c++17", "-O3", "-Wall", "-Wextra"]
_SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vbmi",
               "asimd", "sve")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd_features() -> List[str]:
    """The SIMD features among those the kernels care about that this CPU reports."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[1].split())
            break
    return [f for f in _SIMD_FLAGS if f in flags]


def dc_paths() -> Dict[str, str]:
    """The SIMD paths libdc_delegate.so takes in this process: {"fc_conv": ..., "block_fc": ...}."""
    from dc_keras import delegate

    return {"fc_conv": delegate.simd_path(), "block_fc": delegate.block_simd_path()}


def header_lines() -> List[str]:
    """CPU model, SIMD features and the delegate's paths: the lines every latency benchmark prints first."""
    lines = [f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs, {platform.machine()})",
             f"SIMD features: {' '.join(simd_features()) or 'none reported'}"]
    try:
        paths = dc_paths()
        lines.append(f"dc delegate SIMD path: {paths['fc_conv']}; block-sparse FC path: {paths['block_fc']}")
    except Exception as error:  # noqa: BLE001 - a header must not stop the benchmark
        lines.append(f"dc delegate SIMD path: unknown ({error})")
    return lines


def build_bench() -> Path:
    """block_kernels_bench built against the kernels library (cached by sources and flags)."""
    from dc_keras import _native

    sources, includes = _native.cpp_library("kernels")
    includes = [*includes, ROOT / "tflite_delegate" / "tests"]
    digest = hashlib.sha256("\0".join([_native.compiler(), *BENCH_FLAGS]).encode())
    headers = [h for d in includes for h in sorted(Path(d).rglob("*.h"))]
    for path in [*sources, BENCH_SOURCE, *headers]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    out = _native.cache_dir() / f"block_kernels_bench-{digest.hexdigest()[:16]}"
    binary = out / "block_kernels_bench"
    if binary.is_file():
        return binary
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".bench.{os.getpid()}"
    command = [_native.compiler(), *BENCH_FLAGS, *(f"-I{d}" for d in includes), str(BENCH_SOURCE),
               *map(str, sources), "-pthread", "-o", str(partial)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building block_kernels_bench failed:\n{result.stderr[-4000:]}")
    os.replace(partial, binary)
    return binary


def run_bench(*args: str, env: Optional[dict] = None) -> dict:
    """One run of the timing program; its JSON line as a dict."""
    result = subprocess.run([str(build_bench()), *map(str, args)], capture_output=True, text=True, timeout=600,
                            env=env)
    if result.returncode != 0:
        raise RuntimeError(f"block_kernels_bench {' '.join(map(str, args))} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure() -> dict:
    """This machine's memcpy bandwidth (read + written bytes per second, 4 MB and 128 MB buffers) and
    single-core FMA peak (GFLOP/s with 256- and 512-bit vectors; 0 where the CPU lacks them)."""
    return run_bench("machine")


def roofline_us(bytes_touched: float, flops: float, copy_gbs: float, fma_gflops: float) -> Dict[str, float]:
    """Lower bounds of one invoke in microseconds: moving `bytes_touched` at `copy_gbs` and computing
    `flops` at `fma_gflops`; "bound" is the larger."""
    memory = bytes_touched / (copy_gbs * 1e9) * 1e6 if copy_gbs > 0 else float("nan")
    compute = flops / (fma_gflops * 1e9) * 1e6 if fma_gflops > 0 else float("nan")
    return {"memory_us": memory, "compute_us": compute, "bound_us": max(memory, compute)}


def roofline_line(bytes_touched: float, flops: float, machine: dict, simd: str = "avx512") -> str:
    """One printable roofline line for a case against `machine` (measure()'s dict)."""
    peak = machine.get(f"fma_gflops_{simd}") or machine.get("fma_gflops_avx2") or 0.0
    bound = roofline_us(bytes_touched, flops, machine["copy_gbs_4mb"], peak)
    return (f"{bytes_touched / 1e6:.2f} MB, {flops / 1e6:.2f} MFLOP: >= {bound['memory_us']:.1f} us at "
            f"{machine['copy_gbs_4mb']:.0f} GB/s copy, >= {bound['compute_us']:.1f} us at {peak:.0f} GFLOP/s")
