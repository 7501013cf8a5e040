#!/usr/bin/env bash
# Quick start 1: set everything up, then run a demo on a local cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=$(python3 -c 'import sys; print(sys.executable)')
cd examples && exec "$PY" demo.py
