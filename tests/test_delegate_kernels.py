"""Per-kernel C++ tests of the delegate (tflite_delegate/tests/*_test.cc), compiled with
-fsanitize=address,undefined and run here; each executable exits nonzero on a failed check."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from dc_keras import delegate

TESTS = delegate.DELEGATE_ROOT / "tests"
# test source -> delegate sources it needs beside itself (kernels are tested without a TFLite runtime)
KERNEL_TESTS = {
    "fully_connected_test.cc": ["src/kernels/fully_connected_math.cc", "src/thread_pool.cc"],
}


# Both compilers where present: their UBSan differ (only clang's reports a non-zero offset applied to a null
# pointer, e.g. `data() + 3` on the empty vectors of an all-zero layer).
@pytest.mark.parametrize("compiler_name", ["g++", "clang++"])
@pytest.mark.parametrize("test", sorted(KERNEL_TESTS))
def test_kernel_under_sanitizers(test, compiler_name, tmp_path):
    compiler = shutil.which(compiler_name)
    if compiler is None:
        pytest.skip(f"no {compiler_name}")
    binary = tmp_path / test.replace(".cc", "")
    sources = [str(TESTS / test)] + [str(delegate.DELEGATE_ROOT / s) for s in KERNEL_TESTS[test]]
    build = subprocess.run(
        [compiler, "-std=c++17", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-Werror", *(f"-I{d}" for d in delegate.include_dirs()),
         *sources, "-pthread", "-o", str(binary)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "OK" in run.stdout
