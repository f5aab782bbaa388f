"""C++ tests of the kernel math (tflite_delegate/tests/*_test.cc, every file of that name: FC, conv, depthwise,
gather, ...) against naive dense references, built with -fsanitize=address,undefined and run from pytest.

The builder here is shared with tests/test_delegate_kernels.py (clang++) and tests/test_aarch64.py (cross build
run under qemu): objects are compiled once per compiler + flags + sources and cached, so a second run only links.
A new test main is picked up by its name, as CMake's glob picks it up (tflite_delegate/CMakeLists.txt).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Sequence

import pytest

from dc_keras import _native

ROOT = _native.SOURCE_ROOT
TESTS = ROOT / "tflite_delegate" / "tests"
# The kernel library, the codec and a thread pool: cpp_sources.txt's [kernel_tests].
LIBRARY_SOURCES, INCLUDES = _native.cpp_library("kernel_tests")
TEST_MAINS = {path.stem: path for path in sorted(TESTS.glob("*_test.cc"))}
SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-Werror"]


def _key(compiler: str, flags: Sequence[str], sources: Sequence[Path]) -> str:
    digest = hashlib.sha256("\0".join([compiler, *flags]).encode())
    headers = [h for d in INCLUDES for h in sorted(Path(d).rglob("*.h"))]
    for path in [*sources, *headers]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_tests(compiler: str, flags: Sequence[str], mains: Dict[str, Path], link_flags: Sequence[str] = (),
                tag: str = "host") -> Dict[str, Path]:
    """Compiles LIBRARY_SOURCES and each test main with `compiler` and `flags` (objects in parallel, cached
    under dc_keras's build cache), links one executable per main and returns {name: path}."""
    sources = [*LIBRARY_SOURCES, *mains.values()]
    out = _native.cache_dir() / f"kernel_tests-{tag}-{_key(compiler, [*flags, *link_flags], sources)}"
    executables = {name: out / name for name in mains}
    if all(p.is_file() for p in executables.values()):
        return executables
    out.mkdir(parents=True, exist_ok=True)
    base = [compiler, "-std=c++17", "-Wall", "-Wextra", *flags, *(f"-I{d}" for d in INCLUDES)]

    def compile_one(source: Path) -> Path:
        obj = out / (source.stem + ".o")
        if not obj.is_file():
            partial = out / f".{source.stem}.{os.getpid()}.o"
            result = subprocess.run([*base, "-c", str(source), "-o", str(partial)], capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"compiling {source.name} with {compiler} failed:\n{result.stderr[-6000:]}")
            os.replace(partial, obj)
        return obj

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        objects = dict(zip(sources, pool.map(compile_one, sources)))
    library = [objects[s] for s in LIBRARY_SOURCES]
    for name, main in mains.items():
        partial = out / f".{name}.{os.getpid()}"
        command = [compiler, *flags, str(objects[main]), *map(str, library), "-o", str(partial), "-pthread",
                   *link_flags]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"linking {name} failed:\n{' '.join(command)}\n{result.stderr[-6000:]}")
        os.replace(partial, executables[name])
    return executables


def run_sanitized(executable: Path, name: str) -> str:
    """Runs test main `executable` under ASan/UBSan; fails the test on a nonzero exit or a missing OK line,
    returns its stdout."""
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    result = subprocess.run([str(executable)], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr[-6000:]}"
    assert f"{name}: OK" in result.stdout
    return result.stdout


def check_block_paths(name: str, output: str) -> None:
    """For the block FC and block conv tests: every block path this CPU can run was checked, not only the one
    the process picks by default."""
    if name in ("block_fully_connected_test", "block_conv2d_test"):
        tested = output.split("block paths tested:")[1].split("\n")[0].split()
        assert set(tested) == expected_block_paths()


def expected_block_paths() -> set:
    """The block-sparse FC paths this host's CPU can run (x86-64: portable, AVX2+FMA, AVX-512 F/BW/DQ/VL)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return {"portable"}
    flags = set()
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    paths = {"portable"}
    if {"avx2", "fma"} <= flags:
        paths.add("avx2")
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        paths.add("avx512")
    return paths


def test_every_test_main_is_found():
    assert {"fully_connected_test", "conv2d_test", "depthwise_conv2d_test", "gather_test", "block_fully_connected_test",
            "block_conv2d_test", "bias_test"} <= set(TEST_MAINS)


@pytest.fixture(scope="module")
def sanitized_tests():
    compiler = shutil.which(os.environ.get("CXX", "")) or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler (apt-get install g++)")
    return build_tests(compiler, SANITIZE, TEST_MAINS, tag="asan")


@pytest.mark.parametrize("name", sorted(TEST_MAINS))
def test_kernel_matches_dense_reference_under_sanitizers(sanitized_tests, name):
    result = run_sanitized(sanitized_tests[name], name)
    check_block_paths(name, result)
    if name == "conv2d_test":
        # Host builds run the portable loops (and, on x86-64 with AVX2, the AVX2 clones too), never NEON.
        assert "inner loops portable" in result
        assert "neon" not in result
