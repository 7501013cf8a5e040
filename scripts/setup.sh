#!/usr/bin/env bash
# Installs everything fleet needs on a fresh Debian machine (as root) and
# builds + installs the package. Idempotent: re-running only rebuilds what
# changed (the CMake build directory under build/ is kept).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(command -v python3)}
# Resolve pyenv's shim to the real interpreter (the shim costs ~90 ms per start).
PY=$("$PY" -c 'import sys; print(sys.executable)')

need_apt=()
for pkg in libasio-dev libprotobuf-dev protobuf-compiler libgtest-dev libbenchmark-dev ninja-build ccache \
  iproute2 clang; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "== apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "== pip install build and test dependencies"
"$PY" -m pip install -q --disable-pip-version-check \
  "scikit-build-core>=0.9" "nanobind>=2.0" cmake ninja cloudpickle numpy pytest pytest-timeout ruff 2>&1 \
  | grep -v "Running pip as the 'root' user" || true

echo "== building and installing fleet (C++ runtime + Python package)"
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
  "$PY" -m pip install -q --disable-pip-version-check --no-build-isolation . 2>&1 \
  | grep -v "Running pip as the 'root' user" || true
# pyenv only puts new console scripts (the `fleet` command) on PATH after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
"$PY" -c 'import fleet, fleet._core; print("fleet", fleet.__version__, "installed")'
