"""dc-benchmark: latency of a compressed .tflite through the dc delegate beside TFLite's own baselines.

    dc-benchmark model.tflite                       # dense.tflite / dense_int8.tflite looked up beside it
    dc-benchmark model.tflite --dense_model=d.tflite --int8_model=q.tflite --num_runs=200 --num_threads=2
    dc-benchmark model.tflite --keras_model=model.keras   # first write the missing baselines from Keras
    dc-benchmark --json model.tflite                # JSON instead of the table
    python -m dc_keras.benchmark model.tflite       # the same
    dc-benchmark --arm64_emulated model.tflite      # the dc model on aarch64 LiteRT + delegate under qemu

Rows: dc delegate (compressed file), TFLite without delegate (dense float file, builtin kernels), XNNPACK
float, XNNPACK int8 dynamic-range; median / p90 milliseconds over --num_runs after --warmup_runs (the
configurations interleaved in blocks of 10 invocations unless --nointerleave), file sizes, the delegate's
resident weight bytes, the delegate's SIMD path. See dc_keras/benchmark.py.

A baseline file TFLite cannot load or run with the model's inputs is skipped with a warning naming it; an
unusable model or --keras_model is one line "dc-benchmark: error: ..." and exit status 1 (2: no such model).

--arm64_emulated runs the dc model alone on the real aarch64 LiteRT runtime with the aarch64 delegate under
qemu-user (tflite_delegate/tools/arm64_stack.py, prepared and cached on first use); its timings are labelled
"emulated (qemu) — not for comparison": they prove the model runs there (SIMD path: neon), not its speed.
"""
from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

from dc_keras.cli import one_line, run_tool

FLAGS = flags.FLAGS
flags.DEFINE_string("dense_model", None, "dense float .tflite of the same model (default: dense.tflite beside it)")
flags.DEFINE_string("int8_model", None, "dynamic-range int8 .tflite (default: dense_int8.tflite beside it)")
flags.DEFINE_string("keras_model", None, "a saved Keras model (.keras): write the missing baselines from it first")
flags.DEFINE_integer("num_runs", 100, "timed invocations per configuration", lower_bound=1)
flags.DEFINE_integer("warmup_runs", 10, "untimed invocations before timing", lower_bound=0)
flags.DEFINE_integer("num_threads", 1, "threads of every interpreter and of the dc kernels", lower_bound=1)
flags.DEFINE_integer("batch", None, "resize the inputs' first dimension to this batch size", lower_bound=1)
flags.DEFINE_bool("json", False, "print the result as JSON instead of a table")
flags.DEFINE_bool("interleave", True, "configurations take turns in blocks of 10 invocations, so that a slow phase "
                  "of the machine hits all of them; --nointerleave times one after another")
flags.DEFINE_bool("arm64_emulated", False, "time the dc model on the aarch64 LiteRT runtime and aarch64 delegate "
                  "under qemu-user instead (no baselines; timings not for comparison)")


def _write_baselines_from_keras(benchmark, model: Path) -> None:
    """--keras_model: write the baselines that are missing beside `model`; raises ValueError naming the flag."""
    dense, int8, _ = benchmark.find_baselines(model, FLAGS.dense_model, FLAGS.int8_model)
    if dense is not None and int8 is not None:
        return
    if not Path(FLAGS.keras_model).is_file():
        raise ValueError(f"--keras_model {FLAGS.keras_model}: no such file")
    import keras

    try:
        keras_model = keras.models.load_model(FLAGS.keras_model, compile=False)
    except Exception as error:  # noqa: BLE001 - any loader failure means the file is not a usable model
        raise ValueError(f"--keras_model {FLAGS.keras_model}: cannot load it as a Keras model: {error}") from None
    try:
        written = benchmark.write_baselines(keras_model, model.parent, dense=dense is None and not FLAGS.dense_model,
                                            int8=int8 is None and not FLAGS.int8_model)
    except Exception as error:  # noqa: BLE001 - converter failures come as many exception types
        raise ValueError(f"--keras_model {FLAGS.keras_model}: cannot convert it to the baseline files: "
                         f"{error}") from None
    for path in written.values():
        print(f"dc-benchmark: wrote {path}", file=sys.stderr)


def main(argv) -> int:
    """absl main: benchmark the one positional argument; returns the exit status."""
    if len(argv) != 2:
        raise app.UsageError("usage: dc-benchmark [flags] MODEL.tflite")
    from dc_keras import benchmark

    model = Path(argv[1])
    if not model.is_file():
        print(f"dc-benchmark: error: {model}: no such file", file=sys.stderr)
        return 2
    if FLAGS.keras_model:
        try:
            _write_baselines_from_keras(benchmark, model)
        except ValueError as error:
            print(f"dc-benchmark: error: {one_line(error)}", file=sys.stderr)
            return 1
    try:
        if FLAGS.arm64_emulated:
            result = benchmark.run_emulated_benchmark(model, num_runs=FLAGS.num_runs, warmup_runs=FLAGS.warmup_runs,
                                                      num_threads=FLAGS.num_threads, batch=FLAGS.batch)
        else:
            result = benchmark.run_benchmark(model, FLAGS.dense_model, FLAGS.int8_model, num_runs=FLAGS.num_runs,
                                             warmup_runs=FLAGS.warmup_runs, num_threads=FLAGS.num_threads,
                                             batch=FLAGS.batch, interleave=FLAGS.interleave)
    except (ValueError, RuntimeError) as error:  # the compressed model itself: baselines are skipped instead
        print(f"dc-benchmark: error: {model}: {one_line(error)}", file=sys.stderr)
        return 1
    for message in result.skipped:
        print(f"dc-benchmark: warning: skipped the {message}", file=sys.stderr)
    print(result.to_json() if FLAGS.json else result.format())
    return 0


def run() -> None:
    """Console-script entry point."""
    run_tool(main, __name__)


if __name__ == "__main__":
    run()
