"""dc-inspect: print the compression report of a .tflite written by dc_keras.export_tflite.

    dc-inspect model.tflite            # per-layer table (paper Table 2 columns) and file sizes
    dc-inspect --json model.tflite     # the same as JSON

Everything is read from the file itself: the dc ops' blobs (their real stream sizes) and the small
metadata entry the exporter writes (the dense file size, layers left stock).
"""
from __future__ import annotations

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_bool("json", False, "print the report as JSON instead of a table")


def main(argv) -> int:
    if len(argv) != 2:
        raise app.UsageError("usage: dc-inspect [--json] MODEL.tflite")
    from dc_keras.export.report import inspect_tflite

    path = argv[1]
    try:
        report = inspect_tflite(path)
    except FileNotFoundError:
        print(f"dc-inspect: {path}: no such file", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"dc-inspect: {path}: {error}", file=sys.stderr)
        return 1
    if FLAGS.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{path}:")
        print(report.format() if report.layers else "no dc_keras compressed layers in this file")
    return 0


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
