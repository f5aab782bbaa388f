"""Batch-1 latency of the block-sparse FC loops per SIMD path, beside the unstructured FC loops on a matrix of
the same density, with a roofline for each case (bytes touched and FLOPs against this machine's measured
copy bandwidth and FMA peak). Runs without any exporter: the matrices are generated in C++
(benchmarks/block_kernels_bench.cc, built against the kernels library and cached).

    python benchmarks/block_kernels.py [--size 4096] [--density 0.1] [--codebook 32] [--runs 200] [--json out.json]

One thread, batch 1; each time is the median over 9 rounds of --runs invokes (and the fastest round).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine  # noqa: E402

PATHS = ("avx512", "avx2", "portable")


def _block_bytes(result: dict, size: int, block_len: int) -> float:
    """Codes (one byte per stored weight), block starts (4 bytes per block), x and y."""
    return result["weights"] + 4 * result["blocks"] + 8 * size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--density", type=float, default=0.1, help="fraction of blocks (and of weights) kept")
    parser.add_argument("--codebook", type=int, default=32)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--lengths", default="16,8,4")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    print("\n".join(machine.header_lines()))
    box = machine.measure()
    print(f"measured: copy {box['copy_gbs_4mb']:.1f} GB/s (4 MB), {box['copy_gbs_128mb']:.1f} GB/s (128 MB); "
          f"FMA peak {box['fma_gflops_avx512']:.0f} GFLOP/s (512-bit), {box['fma_gflops_avx2']:.0f} GFLOP/s (256-bit)")
    print(f"FC {args.size}x{args.size}, {1 - args.density:.0%} sparse, {args.codebook}-entry codebook, batch 1, 1 thread")
    rows = []
    for axis in ("rows", "cols"):
        for block_len in map(int, args.lengths.split(",")):
            for path in PATHS:
                r = machine.run_bench("block", axis, block_len, args.size, args.density, args.codebook, path, args.runs)
                if "error" in r:
                    continue
                simd = "avx512" if path == "avx512" else "avx2"
                line = machine.roofline_line(_block_bytes(r, args.size, block_len), 2.0 * r["weights"], box, simd)
                rows.append({"case": f"k{axis.capitalize()}-{block_len}", "path": r["path"], **r})
                print(f"  k{axis.capitalize()}-{block_len:<2} {r['path']:8} {r['median_us']:8.1f} us "
                      f"(best {r['min_us']:.1f})  roofline: {line}")
    for path in ("avx2", "portable"):
        r = machine.run_bench("unstructured", args.size, args.density, args.codebook, path, args.runs)
        bytes_touched = r["resident_bytes"] + 8 * args.size
        line = machine.roofline_line(bytes_touched, 2.0 * r["weights"], box, "avx2")
        rows.append({"case": f"unstructured {r['form']}", **r})
        print(f"  unstructured ({r['form']}) {r['path']:8} {r['median_us']:8.1f} us (best {r['min_us']:.1f})  "
              f"roofline: {line}")
    if args.json:
        args.json.write_text(json.dumps({"machine": box, "header": machine.header_lines(), "cases": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
