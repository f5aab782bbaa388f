"""The delegate's kernel tests (FC, conv, depthwise, gather) cross-built for aarch64 with Debian's
g++-aarch64-linux-gnu and run under qemu-user: this is where the NEON paths (#if defined(__ARM_NEON) in
ops/kernels/neon_math.h) are compiled and checked against the same dense references the host
build checks its portable loops against.

.ci/setup installs both packages; the tests skip (saying which package is missing) only when they are absent.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from test_kernels_conv import TEST_MAINS, build_tests

CROSS = os.environ.get("DC_KERAS_AARCH64_CXX", "aarch64-linux-gnu-g++")
QEMU = "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"  # Debian's cross libc: used by qemu -L for a dynamically linked fallback
MAINS = TEST_MAINS


@pytest.fixture(scope="module")
def arm_tests():
    if shutil.which(CROSS) is None:
        pytest.skip(f"{CROSS} not found: apt-get install g++-aarch64-linux-gnu (done by .ci/setup)")
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} not found: apt-get install qemu-user (done by .ci/setup)")
    # Static executables need neither a sysroot nor binfmt_misc; sanitizers are left to the host build
    # (ASan does not run under qemu-user).
    try:
        return build_tests(CROSS, ["-O2"], MAINS, link_flags=["-static"], tag="aarch64"), []
    except RuntimeError as static_error:  # a toolchain without static libstdc++: link dynamically instead
        try:
            return build_tests(CROSS, ["-O2"], MAINS, tag="aarch64-dynamic"), ["-L", SYSROOT]
        except RuntimeError:
            raise static_error


def test_cross_build_is_aarch64(arm_tests):
    executables, _ = arm_tests
    for path in executables.values():
        with open(path, "rb") as handle:
            header = handle.read(20)
        assert header[:4] == b"\x7fELF"
        assert int.from_bytes(header[18:20], "little") == 183  # e_machine EM_AARCH64


@pytest.mark.parametrize("name", sorted(MAINS))
def test_kernel_under_qemu(arm_tests, name):
    executables, qemu_args = arm_tests
    result = subprocess.run([QEMU, *qemu_args, str(executables[name])], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{name} under qemu failed:\n{result.stdout}\n{result.stderr[-6000:]}"
    assert f"{name}: OK" in result.stdout
    if name == "conv2d_test":
        assert "inner loops neon" in result.stdout  # the NEON path, not the portable one
    if name == "block_fully_connected_test":
        assert "block paths tested: portable neon" in result.stdout  # the tbl lookups, and the portable loops
    if name == "depthwise_conv2d_test":
        assert "activation loops neon" in result.stdout
