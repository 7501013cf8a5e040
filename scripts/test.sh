#!/usr/bin/env bash
# Quick start 2: set everything up, then run every test: the C++ unit tests
# (plain and under ASan/UBSan) with ctest, then the Python suite with pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=$(python3 -c 'import sys; print(sys.executable)')
JOBS=${CMAKE_BUILD_PARALLEL_LEVEL:-2}

echo "== C++ unit tests"
cmake -S . -B build/test -G Ninja -DFLEET_BUILD_TESTS=ON -DFLEET_BUILD_PYTHON=OFF \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
ninja -C build/test -j "$JOBS" >/dev/null
ctest --test-dir build/test --output-on-failure

echo "== C++ build with Clang: -Wthread-safety checks the lock annotations"
CC=clang CXX=clang++ cmake -S . -B build/clang -G Ninja -DFLEET_BUILD_TESTS=ON -DFLEET_BUILD_PYTHON=OFF \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
ninja -C build/clang -j "$JOBS" >/dev/null

echo "== C++ micro-benchmarks (a short smoke run; bench/allocator.sh runs them fully)"
cmake -S . -B build/bench -G Ninja -DFLEET_BUILD_BENCH=ON -DFLEET_BUILD_PYTHON=OFF \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build/bench -j "$JOBS" allocator_bench >/dev/null
# libbenchmark 1.7.1 (Debian 12) takes --benchmark_min_time as plain seconds
# ("0.05s" needs 1.8+). A benchmark that stops with an error still exits 0,
# so look for one in the output.
bench_out=$(build/bench/allocator_bench --benchmark_min_time=0.05 2>&1) || { echo "$bench_out"; exit 1; }
if grep -q "ERROR OCCURRED" <<<"$bench_out"; then
  echo "$bench_out"
  exit 1
fi
echo "allocator_bench: $(grep -c '^BM_' <<<"$bench_out") benchmarks ran"

echo "== C++ unit tests under AddressSanitizer + UBSan"
cmake -S . -B build/asan -G Ninja -DFLEET_BUILD_TESTS=ON -DFLEET_BUILD_PYTHON=OFF \
  -DFLEET_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
ninja -C build/asan -j "$JOBS" >/dev/null
ctest --test-dir build/asan --output-on-failure

echo "== ruff"
"$PY" -m ruff check python tests bench examples scripts

echo "== Python tests"
# Run from tests/ so `import fleet` is the installed package, not python/.
(cd tests && "$PY" -m pytest -q -p no:cacheprovider --timeout=300 "$@" .)

echo "== Python tests again, with fleet-gcs and fleet-node built with ASan + UBSan"
ninja -C build/asan -j "$JOBS" fleet-gcs fleet-node >/dev/null
asan_tmp=$(mktemp -d /tmp/fleet-asan.XXXXXX)
(cd tests && FLEET_BIN_DIR="$PWD/../build/asan" FLEET_TMPDIR="$asan_tmp" \
  "$PY" -m pytest -q -p no:cacheprovider --timeout=300 "$@" .)
if grep -rlE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$asan_tmp" >/dev/null 2>&1; then
  echo "sanitizer reports in the daemons' logs:"
  grep -rE -A20 "ERROR: (Address|Leak)Sanitizer|runtime error:" "$asan_tmp" | head -100
  exit 1
fi
rm -rf "$asan_tmp"
echo "no sanitizer reports from the daemons"
