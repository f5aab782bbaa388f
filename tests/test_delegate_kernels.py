"""The kernel tests (tflite_delegate/tests/*_test.cc, found by tests/test_kernels_conv.py) built with clang++
as well, under -fsanitize=address,undefined: its UBSan differs from g++'s (only clang's reports a non-zero
offset applied to a null pointer, e.g. `data() + 3` on the empty vectors of an all-zero layer)."""
from __future__ import annotations

import shutil

import pytest

from test_kernels_conv import SANITIZE, TEST_MAINS, build_tests, run_sanitized


@pytest.fixture(scope="module")
def clang_tests():
    compiler = shutil.which("clang++")
    if compiler is None:
        pytest.skip("no clang++")
    return build_tests(compiler, SANITIZE, TEST_MAINS, tag="asan-clang")


@pytest.mark.parametrize("name", sorted(TEST_MAINS))
def test_kernel_under_clang_sanitizers(clang_tests, name):
    output = run_sanitized(clang_tests[name], name)
    if name == "block_fully_connected_test":
        # Every block path this CPU can run was checked, not only the one the process picks by default.
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
