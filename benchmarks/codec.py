"""Codec benchmark: a 4096x4096, 90%-sparse, 5-bit layer (Deep Compression's FC setting).

Prints encode time per coder, sizes against the Shannon entropy of each index stream, and the C++
decoder's throughput next to zstandard decompressing the very same index streams (one byte per
symbol) in the same run, so machine load affects both sides alike.

    /work/venv/bin/python benchmarks/codec.py [--repeats 50]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import zstandard

from dc_keras import codec
from dc_keras.codec import native


def make_layer(seed: int = 0, shape=(4096, 4096), sparsity: float = 0.9, bits: int = 5) -> np.ndarray:
    """Gaussian weights, magnitude-pruned to `sparsity`, nonzeros snapped to 2^bits linear centroids."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.02, size=shape).astype(np.float32)
    threshold = np.quantile(np.abs(weights[::16, ::16]), sparsity)
    weights[np.abs(weights) < threshold] = 0
    nonzero = weights[weights != 0]
    centroids = np.linspace(nonzero.min(), nonzero.max(), 1 << bits).astype(np.float32)
    # Linear centroids are sorted, so the nearest one is found by rounding the scaled value.
    scale = (len(centroids) - 1) / (centroids[-1] - centroids[0])
    index = np.clip(np.rint((nonzero - centroids[0]) * scale), 0, len(centroids) - 1).astype(np.int64)
    weights[weights != 0] = centroids[index]
    return weights


def best_time(fn, repeats: int) -> float:
    """Fastest of `repeats` runs (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Runs the benchmark and prints a report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    weights = make_layer()
    print(f"layer {weights.shape}, {np.count_nonzero(weights) / weights.size:.1%} nonzero, "
          f"{len(np.unique(weights[weights != 0]))} centroids, bits=5, index_bits=5")

    blobs = {}
    print("\nencode, sparse layout (wall / CPU seconds), size")
    for coder in ("huffman", "rans", "raw"):
        wall, cpu = time.perf_counter(), time.process_time()
        blobs[coder] = codec.encode(weights, bits=5, index_bits=5, coder=coder, layout="sparse")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"  {coder:8s} {wall:6.2f} s / {cpu:5.2f} s  {len(blobs[coder]):>10,d} bytes  "
              f"({weights.size * 4 / len(blobs[coder]):.1f}x vs float32)")

    print("\nstreams vs entropy (bytes; avg bits/symbol)")
    for coder in ("huffman", "rans"):
        report = codec.analyze(blobs[coder])
        for name, stream in report["streams"].items():
            if not stream["count"]:
                continue
            print(f"  {coder:8s} {name:5s} {stream['count']:>9,d} symbols  entropy {stream['entropy_bytes']:>11,.0f}"
                  f" ({stream['entropy_bits']:.3f} b)  coded {stream['bytes']:>9,d} ({stream['bits_per_symbol']:.3f} b)"
                  f"  +{stream['bytes'] / stream['entropy_bytes'] - 1:.2%}")
        print(f"  {coder:8s} header {report['header_bytes']} B, codebook {report['codebook_bytes']} B, "
              f"fillers {report['num_fillers']:,d}")

    wall, cpu = time.perf_counter(), time.process_time()
    auto = codec.encode(weights, bits=5, index_bits=5, coder="auto", layout="auto")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    auto_info = codec.parse_info(auto)
    print(f"  coder=auto layout=auto: {len(auto):,d} bytes ({'dense' if auto_info.dense_layout else 'sparse'} layout, "
          f"code stream {auto_info.code_coder}), {wall:.2f} s / {cpu:.2f} s")

    blob = blobs["huffman"]
    info = native.parse_info(blob)
    delta, code = native.decode_streams(blob)
    symbols = len(delta) + len(code)
    out = (np.empty_like(delta), np.empty_like(code))
    t_huff = best_time(lambda: native.decode_streams(blob, info, out), args.repeats)
    rans_blob = blobs["rans"]
    rans_info = native.parse_info(rans_blob)
    t_rans = best_time(lambda: native.decode_streams(rans_blob, rans_info, out), args.repeats)
    t_parse = best_time(lambda: native.parse_info(blob), args.repeats)
    t_dense = best_time(lambda: native.decode(blob), max(3, args.repeats // 4))
    t_sparse = best_time(lambda: native.decode_sparse(blob), max(3, args.repeats // 4))

    print(f"\nC++ decode of both index streams ({symbols:,d} symbols, CRC32 check included)")
    print(f"  huffman  {t_huff * 1e3:7.2f} ms  {symbols / t_huff / 1e6:7.1f} M symbols/s")
    print(f"  of which ParseInfo (header + CRC32 of {len(blob):,d} bytes) {t_parse * 1e3:.2f} ms; Huffman alone "
          f"{(t_huff - t_parse) * 1e3:.2f} ms = {symbols / (t_huff - t_parse) / 1e6:.1f} M symbols/s")
    print(f"  rans     {t_rans * 1e3:7.2f} ms  {symbols / t_rans / 1e6:7.1f} M symbols/s")
    print(f"  full DecodeDense (float32 out) {t_dense * 1e3:.2f} ms, DecodeSparse {t_sparse * 1e3:.2f} ms")

    print("\nzstandard on the same streams (one byte per symbol), decompression")
    decompressor = zstandard.ZstdDecompressor()
    for level in (3, 19):
        compressor = zstandard.ZstdCompressor(level=level)
        frames = [compressor.compress(delta.tobytes()), compressor.compress(code.tobytes())]
        t_zstd = best_time(lambda: [decompressor.decompress(f) for f in frames], args.repeats)
        size = sum(map(len, frames))
        print(f"  zstd -{level:<2d}  {t_zstd * 1e3:7.2f} ms  {symbols / t_zstd / 1e6:7.1f} M symbols/s  "
              f"{size:>10,d} bytes   huffman speed / zstd: {t_zstd / t_huff:.2f}x with CRC, "
              f"{t_zstd / (t_huff - t_parse):.2f}x without")


if __name__ == "__main__":
    main()
