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

echo "== C++ unit tests under AddressSanitizer + UBSan"
cmake -S . -B build/asan -G Ninja -DFLEET_BUILD_TESTS=ON -DFLEET_BUILD_PYTHON=OFF \
  -DFLEET_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
ninja -C build/asan -j "$JOBS" >/dev/null
ctest --test-dir build/asan --output-on-failure

echo "== ruff"
"$PY" -m ruff check python tests bench examples

echo "== Python tests"
# Run from tests/ so `import fleet` is the installed package, not python/.
cd tests && "$PY" -m pytest -q -p no:cacheprovider --timeout=300 "$@" .
