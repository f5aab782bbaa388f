"""Regenerates README's results tables from the benchmarks, in one run.

    python benchmarks/run_all.py [--quick] [--markdown results.md] [--only NAME ...] [--keep DIR]

Runs every benchmark of README's "Results" section one after the other (each as its own process, as
README's commands do), collects the figures each one prints or writes as JSON, and prints one Markdown
table: what was measured, the command, our figure, the baseline measured in the same run, and the
benchmark's wall time. The heading names the machine (CPU model, logical CPUs, SIMD features, load
average): timings depend on it, byte counts and accuracies do not.

The full run trains LeNet-300-100 and LeNet-5 with dc-compress and with tfmot (compare_with_tfmot.py) and
takes about an hour on a quiet 2-core machine. --quick skips the trainings (the whole-file rows then come
from file_overhead.py's untrained models: sizes only, no accuracy) and runs every timing with few repeats,
in a few minutes; its figures are for checking that everything runs, not for quoting.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from typing import Callable, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vnni", "asimd", "sve", "neon")


def machine() -> str:
    """CPU model, logical CPUs, SIMD features and load average of this machine, as one line."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and value.strip():
                    model = value.strip()
                elif key in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        pass
    simd = [f for f in SIMD_FLAGS if f in flags]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{model}, {os.cpu_count()} logical CPUs, SIMD: {' '.join(simd) or 'none found'}, "
            f"load average {load}")


class Benchmark:
    """One benchmark: its command (full and --quick), and how to read our figure and the baseline's."""

    def __init__(self, name: str, what: str, argv: List[str], quick_argv: Optional[List[str]],
                 read: Callable[[str, Optional[dict]], tuple], json_flag: Optional[str] = "--json",
                 machine_dependent: bool = True):
        self.name, self.what, self.argv, self.quick_argv = name, what, argv, quick_argv
        self.read, self.json_flag, self.machine_dependent = read, json_flag, machine_dependent


def _search(pattern: str, text: str, group: int = 1) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no line matching {pattern!r}")
    return match.group(group)


def read_compare(stdout: str, data: Optional[dict]) -> tuple:
    c, ours = data["comparison"], data["ours"]
    weights = ours.get("weights_all") or {}
    pqh = f", weights alone (P+Q+H) {1 / weights['rate_pqh']:.1f}x" if weights.get("rate_pqh") else ""
    breakdown = ours.get("file_breakdown")
    parts = (f"; file: weights {breakdown['weights']} B, biases {breakdown['biases']} B, other "
             f"{breakdown['other_constants'] + breakdown['graph']} B" if breakdown else "")
    best = c["baseline_best"]
    return (f"{c['ours']['size']:,} B = **{c['ours']['ratio']:.1f}x** vs dense.tflite ({c['ours']['dense_size']:,} B)"
            f"{pqh}; test accuracy {100 * c['ours']['dense_accuracy']:.2f}% (dense) -> "
            f"{100 * c['ours']['accuracy']:.2f}%{parts}; dc-compress {c['seconds']['dc_compress']:.0f} s",
            f"best tfmot file {best['variant']} under {best['compressor']}: {best['size']:,} B at "
            f"{100 * best['accuracy']:.2f}%; dc_keras **{c['advantage']:.2f}x** smaller")


def read_file_overhead(stdout: str, data: Optional[dict]) -> tuple:
    before = _search(r"before the cuts (\d+) B", stdout)
    after = _search(r"^after the cuts (\d+) B", stdout)
    breakdown = _search(r"^after the cuts.*\n\s*file bytes: (.*)$", stdout)
    return (f"{after} B after the cuts ({breakdown})", f"{before} B with the cuts off (untrained weights)")


def read_real_networks(stdout: str, data) -> tuple:
    rows = "; ".join(f"{r['network']}: {r['ratio']:.2f}x, {r['dc_ops']} dc ops, {r['stock_large_ops']} large stock "
                     f"ops, {r['max_rel_error']:.1e}" for r in data)
    return rows, "dense .tflite of the same network"


def read_fc_latency(stdout: str, data) -> tuple:
    out = []
    for case in data:
        ratios = case["dc_over_fastest_stock_per_repeat"]
        median = sorted(ratios)[len(ratios) // 2]
        out.append(f"{case['title']}: dc/fastest stock {median:.2f}")
    fc = data[0]
    resident = f"; resident weights {fc['resident_weight_bytes'] / 1e6:.2f} MB vs {fc['dense_weight_bytes'] / 1e6:.1f} MB"
    return "; ".join(out) + resident, "fastest stock builtin / XNNPACK float or int8 (same run)"


def read_conv_block_latency(stdout: str, data) -> tuple:
    ours, theirs = [], []
    for case in data:
        m = {name: seconds * 1e3 for name, seconds in case["medians_s"].items()}
        layer = case["title"].split(" on ")[0]
        ours.append(f"{layer}: block {m['dc (block)']:.3f} ms, unstructured {m['dc (unstructured)']:.3f} ms")
        theirs.append(f"{layer}: int8 {m['stock int8 dynamic-range, XNNPACK']:.3f} ms, "
                      f"float {m['stock float32, XNNPACK']:.3f} ms")
    return "; ".join(ours), "XNNPACK (same run) " + "; ".join(theirs)


def read_tf_op(stdout: str, data) -> tuple:
    rows = "; ".join(f"batch {b}: {r['sparse_ms'][1]:.2f} ms, {r['speedup']:.1f}x" for b, r in data["batches"].items())
    return f"DcSparseMatMul {rows}", "tf.matmul (same run)"


def read_codec(stdout: str, data) -> tuple:
    speed = _search(r"^\s*huffman\s+[\d.]+ ms\s+([\d.]+) M symbols/s", stdout)
    zstd = _search(r"zstd -19.*?([\d.]+) M symbols/s", stdout)
    return f"Huffman decode {float(speed) / 1e3:.2f} G symbols/s incl. header + CRC", f"zstd -19 {float(zstd) / 1e3:.2f} G/s"


def read_kmeans(stdout: str, data) -> tuple:
    ours = _search(r"dc_keras cluster_weights \(Keras 3 model\):\s+([\d.]+) s", stdout)
    try:
        seconds = _search(r"tfmot 0.8 cluster_weights.*?:\s+([\d.]+) s", stdout)
        theirs = f"tfmot cluster_weights {seconds} s"
    except ValueError:
        theirs = "tfmot skipped"
    return f"cluster_weights {ours} s", theirs


def read_pruning(stdout: str, data) -> tuple:
    ratios = {label: (wall, cpu) for label, wall, cpu in
              re.findall(r"^\s+(\S+ / [\S ]+?)\s+([\d.]+)\s+([\d.]+)", stdout, re.MULTILINE)}
    ours = ratios["dc_keras / keras plain"]
    tfmot = ratios["tfmot / tf_keras plain"]
    return (f"dc_keras pruning / plain Keras 3 fit: {ours[0]} wall, {ours[1]} CPU",
            f"tfmot / plain tf_keras: {tfmot[0]} wall, {tfmot[1]} CPU")


def read_reliability(stdout: str, data) -> tuple:
    header = next(line for line in stdout.splitlines() if line.startswith("| attack class"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    totals = {c: 0 for c in columns[1:]}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and len(cells) == len(columns) and cells[1].isdigit():
            for column, cell in zip(columns[1:], cells[1:]):
                totals[column] += int(cell) if cell.isdigit() else 0
    shown = ", ".join(f"{v} {k}" for k, v in totals.items() if v or k in ("crash", "hang", "silent wrong"))
    return shown, "0 crash / hang / silent wrong / data lost / raw traceback expected"


def benchmarks(python: str) -> List[Benchmark]:
    """Every benchmark of README's results, in the order of its tables."""
    b = os.path.join("benchmarks", "")
    return [
        Benchmark("lenet300", "LeNet-300-100 whole file vs tfmot (Fashion-MNIST)",
                  [python, b + "compare_with_tfmot.py", "--model", "lenet300"], None, read_compare),
        Benchmark("lenet5", "LeNet-5 whole file vs tfmot (Fashion-MNIST)",
                  [python, b + "compare_with_tfmot.py", "--model", "lenet5"], None, read_compare),
        Benchmark("file_overhead", "non-weight bytes of compressed.tflite (LeNet-300-100 layout)",
                  [python, b + "file_overhead.py"], [python, b + "file_overhead.py"], read_file_overhead,
                  json_flag=None, machine_dependent=False),
        Benchmark("real_networks", "networks users ship: export coverage and size",
                  [python, b + "real_networks.py"], [python, b + "real_networks.py"], read_real_networks,
                  machine_dependent=False),
        Benchmark("fc_latency", "FC 4096x4096 90% sparse and LeNet-300-100, batch 1, 1 thread",
                  [python, b + "fc_latency.py"], [python, b + "fc_latency.py", "--runs", "20", "--repeats", "1"],
                  read_fc_latency),
        Benchmark("conv_block_latency", "Conv2D 1x1 256->256 and 3x3 64->64 on 16x16, 90% sparse in blocks of 16 "
                  "input channels, batch 1, 1 thread", [python, b + "conv_block_latency.py"],
                  [python, b + "conv_block_latency.py", "--runs", "20", "--repeats", "1"], read_conv_block_latency),
        Benchmark("tf_op", "TF op DcSparseMatMul 4096x4096 90% sparse",
                  [python, b + "tf_op.py", "--threads", "1", "--batches", "1", "16", "64"],
                  [python, b + "tf_op.py", "--threads", "1", "--batches", "1", "--repeats", "10"], read_tf_op),
        Benchmark("codec", "Huffman decode, 3.4M symbols", [python, b + "codec.py"],
                  [python, b + "codec.py", "--repeats", "3"], read_codec, json_flag=None),
        Benchmark("kmeans", "k-means, 4096x4096 layer 90% pruned, 32 clusters", [python, b + "kmeans.py"],
                  [python, b + "kmeans.py", "--repeats", "1", "--skip-tfmot"], read_kmeans, json_flag=None),
        Benchmark("pruning_overhead", "pruning overhead, LeNet-300-100 epoch",
                  [python, b + "pruning_overhead.py", "--epochs", "4", "--rounds", "3"],
                  [python, b + "pruning_overhead.py", "--epochs", "2", "--rounds", "1", "--train-size", "5000"],
                  read_pruning, json_flag=None),
        Benchmark("reliability", "adversarial input (corrupt blobs, crafted files, bad CLI input)",
                  [python, b + "reliability.py"], [python, b + "reliability.py", "--quick"], read_reliability,
                  machine_dependent=False),
    ]


def run(bench: Benchmark, quick: bool, scratch: str, keep: Optional[str]) -> dict:
    """Runs one benchmark; returns {name, what, command, ours, baseline, seconds, ok}."""
    argv = list(bench.quick_argv if quick else bench.argv)
    json_path = None
    if bench.json_flag:
        json_path = os.path.join(scratch, bench.name + ".json")
        argv += [bench.json_flag, json_path]
    command = " ".join((bench.quick_argv if quick else bench.argv)[1:])
    start = time.perf_counter()
    print(f"$ {command}", file=sys.stderr, flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    process = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if keep:
        with open(os.path.join(keep, bench.name + ".log"), "w") as handle:
            handle.write(process.stdout + "\n--- stderr ---\n" + process.stderr)
    data = None
    if json_path and os.path.exists(json_path):
        with open(json_path) as handle:
            data = json.load(handle)
    try:
        ours, baseline = bench.read(process.stdout, data)
        ok = True
    except (ValueError, KeyError, TypeError, IndexError) as error:
        tail = (process.stdout.strip().splitlines() or process.stderr.strip().splitlines() or ["no output"])[-1]
        ours, baseline, ok = f"not read ({error}); last line: {tail}", "-", False
    if process.returncode != 0:
        ours = f"exit status {process.returncode}: {ours}"
    return {"name": bench.name, "what": bench.what, "command": command, "ours": ours, "baseline": baseline,
            "seconds": round(seconds, 1), "ok": ok and process.returncode == 0,
            "machine_dependent": bench.machine_dependent}


def table(rows: List[dict], heading: str) -> str:
    """The results as Markdown: a heading naming the machine, then one row per benchmark."""
    lines = [heading, "", "| what | command | dc_keras | baseline, same run | wall |", "|---|---|---|---|---|"]
    for row in rows:
        what = row["what"] + ("" if row["machine_dependent"] else " (machine-independent)")
        lines.append(f"| {what} | `python {row['command']}` | {row['ours']} | {row['baseline']} | "
                     f"{row['seconds']:.0f} s |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="no training, few repeats (a smoke run, minutes)")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--only", nargs="+", help="run only these benchmarks (names: see --list)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--keep", help="write each benchmark's full output to DIR/<name>.log")
    args = parser.parse_args(argv)

    chosen = benchmarks(sys.executable)
    if args.list:
        print("\n".join(f"{b.name}: {b.what}" for b in chosen))
        return 0
    if args.only:
        unknown = sorted(set(args.only) - {b.name for b in chosen})
        if unknown:
            parser.error(f"unknown benchmarks {unknown}; see --list")
        chosen = [b for b in chosen if b.name in args.only]
    if args.quick:
        skipped = [b.name for b in chosen if b.quick_argv is None]
        chosen = [b for b in chosen if b.quick_argv is not None]
        if skipped:
            print(f"--quick skips {', '.join(skipped)} (they train networks)", file=sys.stderr)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    heading = (f"Results ({'--quick smoke run, not for quoting' if args.quick else 'full run'}) on "
               f"{machine()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; timings depend on this "
               "machine and its load, sizes and accuracies do not")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dc_run_all_") as scratch:
        for bench in chosen:
            rows.append(run(bench, args.quick, scratch, args.keep))
    text = table(rows, heading)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(text + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
