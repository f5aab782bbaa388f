#!/usr/bin/env bash
# On-device version of dc-benchmark: pushes TFLite's prebuilt benchmark_model, libdc_delegate.so and the
# models to an Android phone with adb and times, on the phone, with the same rows as dc-benchmark:
#   dc delegate          compressed model, --external_delegate_path=libdc_delegate.so
#   TFLite, no delegate  dense.tflite, --use_xnnpack=false
#   XNNPACK float        dense.tflite, --use_xnnpack=true
#   XNNPACK int8 dyn.    dense_int8.tflite, --use_xnnpack=true
#
# Usage:
#   examples/android/benchmark.sh MODEL.tflite [DENSE.tflite] [INT8.tflite]
# Environment:
#   BENCHMARK_MODEL  path of benchmark_model for android_aarch64 (download: TFLite's "Performance measurement"
#                    page, nightly android_aarch64_benchmark_model); required
#   DELEGATE_LIB     libdc_delegate.so built for arm64-v8a (default build-android/libdc_delegate.so, see
#                    tflite_delegate/README.md)
#   NUM_THREADS (1)  NUM_RUNS (100)  WARMUP_RUNS (10)  ADB (adb)  SERIAL (adb -s, optional)
#   DEVICE_DIR (/data/local/tmp/dc_keras)
# Baselines default to dense.tflite / dense_int8.tflite beside MODEL (as dc-benchmark looks them up).
set -euo pipefail

usage() { sed -n '2,21p' "$0" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 3 ] || usage
MODEL=$1
DIR=$(cd "$(dirname "$MODEL")" && pwd)
DENSE=${2:-$DIR/dense.tflite}
INT8=${3:-$DIR/dense_int8.tflite}
: "${BENCHMARK_MODEL:?set BENCHMARK_MODEL to the prebuilt android_aarch64 benchmark_model of TFLite}"
DELEGATE_LIB=${DELEGATE_LIB:-build-android/libdc_delegate.so}
NUM_THREADS=${NUM_THREADS:-1}
NUM_RUNS=${NUM_RUNS:-100}
WARMUP_RUNS=${WARMUP_RUNS:-10}
DEVICE_DIR=${DEVICE_DIR:-/data/local/tmp/dc_keras}
ADB=(${ADB:-adb})
[ -n "${SERIAL:-}" ] && ADB+=(-s "$SERIAL")

for f in "$MODEL" "$BENCHMARK_MODEL" "$DELEGATE_LIB"; do
  [ -f "$f" ] || { echo "benchmark.sh: $f not found" >&2; exit 1; }
done
command -v "${ADB[0]}" >/dev/null || { echo "benchmark.sh: ${ADB[0]} not found (Android platform-tools)" >&2; exit 1; }
"${ADB[@]}" get-state >/dev/null || { echo "benchmark.sh: no device (adb devices)" >&2; exit 1; }

missing=()
[ -f "$DENSE" ] || missing+=("dense float baseline $DENSE")
[ -f "$INT8" ] || missing+=("int8 baseline $INT8")

"${ADB[@]}" shell mkdir -p "$DEVICE_DIR"
push() { "${ADB[@]}" push -q "$1" "$DEVICE_DIR/$2" >/dev/null; }
push "$BENCHMARK_MODEL" benchmark_model
push "$DELEGATE_LIB" libdc_delegate.so
push "$MODEL" model.tflite
[ -f "$DENSE" ] && push "$DENSE" dense.tflite
[ -f "$INT8" ] && push "$INT8" dense_int8.tflite
"${ADB[@]}" shell chmod 755 "$DEVICE_DIR/benchmark_model"

# Runs benchmark_model on the phone and prints one table row. benchmark_model's summary of the timed runs
# is a line "count=N first=.. curr=.. min=.. max=.. avg=.. std=.." in microseconds (releases that also print
# "median=" / "p90=" get those columns filled; others show "-" there).
run() {
  local name=$1 file=$2
  shift 2
  local out
  if ! out=$("${ADB[@]}" shell "cd $DEVICE_DIR && ./benchmark_model --graph=$file --num_threads=$NUM_THREADS --num_runs=$NUM_RUNS --warmup_runs=$WARMUP_RUNS --min_secs=0 --warmup_min_secs=0 $*" 2>&1); then
    printf '%-20s  %-18s  failed:\n%s\n' "$name" "$file" "$out" >&2
    return 0
  fi
  local stats size
  stats=$(grep -o 'count=[0-9]* .*' <<<"$out" | tail -1)
  size=$("${ADB[@]}" shell stat -c %s "$DEVICE_DIR/$file" | tr -d '\r')
  awk -v n="$name" -v f="$file" -v s="$size" -v line="$stats" 'BEGIN {
    k = split(line, kv, " ")
    for (i = 1; i <= k; ++i) { split(kv[i], pair, "="); v[pair[1]] = pair[2] }
    med = ("median" in v) ? sprintf("%.3f", v["median"] / 1000) : "-"
    p90 = ("p90" in v) ? sprintf("%.3f", v["p90"] / 1000) : "-"
    printf "%-20s  %-18s  %10s  %9s  %7s  %8.3f  %8.3f  %8.3f\n", n, f, s, med, p90, v["avg"] / 1000, v["min"] / 1000, v["std"] / 1000
  }'
}

echo "$(basename "$MODEL") on $("${ADB[@]}" shell getprop ro.product.model | tr -d '\r'): $NUM_THREADS thread(s), $NUM_RUNS runs after $WARMUP_RUNS warm-up"
printf '%-20s  %-18s  %10s  %9s  %7s  %8s  %8s  %8s\n' configuration file "size B" "median ms" "p90 ms" "avg ms" "min ms" "std ms"
printf '%-20s  %-18s  %10s  %9s  %7s  %8s  %8s  %8s\n' -------------------- ------------------ ---------- --------- ------- -------- -------- --------
run "dc delegate" model.tflite --external_delegate_path="$DEVICE_DIR/libdc_delegate.so" \
    --external_delegate_options="num_threads:$NUM_THREADS;mode:sparse"
[ -f "$DENSE" ] && run "TFLite, no delegate" dense.tflite --use_xnnpack=false
[ -f "$DENSE" ] && run "XNNPACK float" dense.tflite --use_xnnpack=true
[ -f "$INT8" ] && run "XNNPACK int8 dyn." dense_int8.tflite --use_xnnpack=true
if [ ${#missing[@]} -gt 0 ]; then
  printf 'missing: %s\n' "$(IFS=';'; echo "${missing[*]}")"
fi
