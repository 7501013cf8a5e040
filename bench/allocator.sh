#!/usr/bin/env bash
# Builds (Release) and runs the object store allocator's micro-benchmarks
# (bench/cpp/allocator_bench.cc, Google Benchmark), printing the results.
# Extra arguments go to the benchmark, e.g. --benchmark_filter=SteadyState
# or --benchmark_repetitions=5. Needs libbenchmark-dev (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build/bench -G Ninja -DFLEET_BUILD_BENCH=ON -DFLEET_BUILD_PYTHON=OFF \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build/bench -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" allocator_bench >/dev/null
exec build/bench/allocator_bench "$@"
