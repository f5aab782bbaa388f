"""Filters TensorFlow's start-up notices out of the process's stderr.

Why at the file-descriptor level: TensorFlow's C++ runtime writes its oneDNN, CUDA-driver and
cpu_feature_guard notices straight to fd 2 before its own logging is configured, so neither
TF_CPP_MIN_LOG_LEVEL nor Python's logging can silence them. Only lines matching the known notices are
dropped; anything else written meanwhile (a real error) is replayed to stderr. DC_KERAS_TF_LOGS=1 keeps
everything.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from typing import Iterator

SHOW_ENV = "DC_KERAS_TF_LOGS"
"""Set to 1 to see TensorFlow's start-up notices."""

_NOTICE = re.compile(
    rb"All log messages before absl::InitializeLog|oneDNN custom operations are on|"
    rb"Could not find cuda drivers|cuda_platform\.cc.*cuInit|Unable to register cu(DNN|FFT|BLAS) factory|"
    rb"cpu_feature_guard\.cc|rebuild TensorFlow with the appropriate compiler flags|"
    rb"computation placer already registered|TF-TRT Warning")


_CONVERSION_CHATTER = re.compile(
    rb"^(I\d{4} |INFO:)|tf_tfl_flatbuffer_helpers\.cc:\d+\] Ignored (output_format|drop_control_dependency)")
"""What TFLite conversion prints at INFO level (SavedModel reads and writes, fingerprints, MLIR passes) and
the converter's two warnings about options it ignores by design: a few dozen lines per conversion."""


def enabled() -> bool:
    """True unless DC_KERAS_TF_LOGS=1 asks for TensorFlow's notices."""
    return os.environ.get(SHOW_ENV, "") not in ("1", "true", "yes")


@contextlib.contextmanager
def filtered(conversion: bool = False) -> Iterator[None]:
    """Within the block, stderr lines that are TensorFlow start-up notices (and with `conversion`, TFLite
    conversion's INFO chatter, plus what Keras's SavedModel export prints to stdout: the artifact path and
    its signatures) are dropped; others, warnings and errors among them, are kept."""
    if not enabled():
        yield
        return
    if conversion:
        with contextlib.redirect_stdout(io.StringIO()), _filtered_fd2(conversion=True):
            yield
        return
    with _filtered_fd2(conversion=False):
        yield


@contextlib.contextmanager
def _filtered_fd2(conversion: bool) -> Iterator[None]:
    """The fd-level part of filtered(): stderr captured in the block, replayed without the notices."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreter): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True)
                    if not _NOTICE.search(line) and not (conversion and _CONVERSION_CHATTER.search(line))]
            if kept:
                os.write(2, b"".join(kept))


def initialise_tensorflow_quietly() -> None:
    """Imports TensorFlow and initialises its devices with the notices filtered (for command-line tools,
    where the device probe's CUDA notice would otherwise appear at the first operation)."""
    with filtered():
        import tensorflow as tf

        tf.config.list_physical_devices()
