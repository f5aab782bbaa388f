"""The kernel tests (tflite_delegate/tests/*_test.cc, found by tests/test_kernels_conv.py) built with clang++
as well, under -fsanitize=address,undefined: its UBSan differs from g++'s (only clang's reports a non-zero
offset applied to a null pointer, e.g. `data() + 3` on the empty vectors of an all-zero layer)."""
from __future__ import annotations

import shutil

import pytest

from test_kernels_conv import SANITIZE, TEST_MAINS, build_tests, check_block_paths, run_sanitized


@pytest.fixture(scope="module")
def clang_tests():
    compiler = shutil.which("clang++")
    if compiler is None:
        pytest.skip("no clang++")
    return build_tests(compiler, SANITIZE, TEST_MAINS, tag="asan-clang")


@pytest.mark.parametrize("name", sorted(TEST_MAINS))
def test_kernel_under_clang_sanitizers(clang_tests, name):
    check_block_paths(name, run_sanitized(clang_tests[name], name))

