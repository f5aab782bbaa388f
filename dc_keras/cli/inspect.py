"""dc-inspect: print the compression report of a .tflite written by dc_keras.export_tflite.

    dc-inspect model.tflite            # per-layer table (paper Table 2 columns) and file sizes
    dc-inspect --json model.tflite     # the same as JSON

Everything is read from the file itself: the dc ops' blobs (their real stream sizes) and the small
metadata entry the exporter writes (the dense file size, layers left stock).

A file the dc delegate would refuse (a blob whose shape disagrees with its op's options, more weights than
the readers decode, a corrupt blob, malformed options or metadata) is reported as invalid: one line
"dc-inspect: error: FILE: ..." naming each such layer and why, exit status 1 (2 for a missing file).
"""
from __future__ import annotations

import json
import sys

from absl import app, flags

from dc_keras.cli import one_line, run_tool

FLAGS = flags.FLAGS
flags.DEFINE_bool("json", False, "print the report as JSON instead of a table")


def main(argv) -> int:
    """absl main: inspect the one positional argument; returns the exit status."""
    if len(argv) != 2:
        raise app.UsageError("usage: dc-inspect [--json] MODEL.tflite")
    from dc_keras.export.report import inspect_tflite

    path = argv[1]
    try:
        report = inspect_tflite(path)
    except FileNotFoundError:
        print(f"dc-inspect: error: {path}: no such file", file=sys.stderr)
        return 2
    except IsADirectoryError:
        print(f"dc-inspect: error: {path}: is a directory, not a .tflite file", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"dc-inspect: error: {path}: cannot read it: {error.strerror or error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"dc-inspect: error: {path}: {one_line(error)}", file=sys.stderr)
        return 1
    if FLAGS.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{path}:")
        print(report.format() if report.layers else "no dc_keras compressed layers in this file")
    return 0


def run() -> None:
    """Console-script entry point."""
    run_tool(main, __name__)


if __name__ == "__main__":
    run()
