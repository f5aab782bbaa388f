"""Per-kernel C++ tests of the delegate (tflite_delegate/tests/*_test.cc), compiled with
-fsanitize=address,undefined and run here; each executable exits nonzero on a failed check."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from dc_keras import _native, delegate

TESTS = delegate.DELEGATE_ROOT / "tests"
# Kernel tests link the kernel library without a TFLite runtime (cpp_sources.txt's [kernel_tests]).
KERNEL_TESTS = ["fully_connected_test.cc", "block_fully_connected_test.cc"]
LIBRARY_SOURCES, INCLUDE_DIRS = _native.cpp_library("kernel_tests")


# Both compilers where present: their UBSan differ (only clang's reports a non-zero offset applied to a null
# pointer, e.g. `data() + 3` on the empty vectors of an all-zero layer).
@pytest.mark.parametrize("compiler_name", ["g++", "clang++"])
@pytest.mark.parametrize("test", sorted(KERNEL_TESTS))
def test_kernel_under_sanitizers(test, compiler_name, tmp_path):
    compiler = shutil.which(compiler_name)
    if compiler is None:
        pytest.skip(f"no {compiler_name}")
    binary = tmp_path / test.replace(".cc", "")
    sources = [str(TESTS / test)] + [str(s) for s in LIBRARY_SOURCES]
    build = subprocess.run(
        [compiler, "-std=c++17", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-Werror", *(f"-I{d}" for d in INCLUDE_DIRS),
         *sources, "-pthread", "-o", str(binary)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "OK" in run.stdout
    if test == "block_fully_connected_test.cc":
        # Every block path this CPU can run was checked, not only the one the process picks by default.
        assert set(run.stdout.split("block paths tested:")[1].split("\n")[0].split()) == expected_block_paths()


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
