"""What a new user meets first: each tool's --help shows its description and its own flags, no TensorFlow
start-up notices, and dc-compress writes one line per epoch (no progress-bar escapes) into a log file."""
import os
import subprocess
import sys

import pytest

from test_pipeline_cli import _dense_model, _npz

from dc_keras import _tf_notices
from dc_keras.cli import keras_verbosity

_ENV = {k: v for k, v in os.environ.items() if k != _tf_notices.SHOW_ENV}


def _as_console_script(module, *argv, **kwargs):
    """Runs `module`'s run() the way a generated console script does: from a __main__ without docstring."""
    code = f"import sys\nfrom dc_keras.cli.{module} import run\nsys.argv = {['dc-' + module, *argv]!r}\nrun()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_ENV, timeout=600,
                          **kwargs)


@pytest.mark.parametrize("module, description, own_flags", [
    ("inspect", "print the compression report of a .tflite", ["--[no]json"]),
    ("benchmark", "latency of a compressed .tflite", ["--num_runs", "--dense_model", "--[no]arm64_emulated"]),
    ("compress", "train and compress a Keras classifier", ["--output_dir", "--bits", "--verbosity_level"]),
])
def test_help_shows_description_and_own_flags(module, description, own_flags):
    run = _as_console_script(module, "--help")  # absl's --help exits with status 1 by design
    assert description in run.stdout
    for flag in own_flags:
        assert flag in run.stdout, flag
    assert "Try --helpfull" in run.stdout
    assert not [line for line in run.stderr.splitlines() if _tf_notices._NOTICE.search(line.encode())]


def test_keras_verbosity_follows_the_terminal(monkeypatch):
    class FakeStdout:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setattr(sys, "stdout", FakeStdout(True))
    assert keras_verbosity(None) == 1
    monkeypatch.setattr(sys, "stdout", FakeStdout(False))
    assert keras_verbosity(None) == 2
    assert keras_verbosity(0) == 0 and keras_verbosity(1) == 1


def test_compress_into_a_log_writes_one_line_per_epoch(tmp_path):
    run = _as_console_script(
        "compress", f"--model={_dense_model(tmp_path / 'm.keras')}", f"--data={_npz(tmp_path / 'd.npz')}",
        f"--output_dir={tmp_path / 'out'}", "--epochs=2", "--prune_epochs=1", "--prune_iterations=1",
        "--cluster_epochs=1", "--batch_size=32", "--sparsity=0.5", "--bits=3", "--noplots")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "\r" not in run.stdout and "\x1b[" not in run.stdout
    assert sum(line.startswith("Epoch ") or " - loss:" in line for line in run.stdout.splitlines()) >= 2
    assert not [line for line in run.stderr.splitlines() if _tf_notices._NOTICE.search(line.encode())]
