"""Runs fleet's microbenchmark: the same as ``fleet microbenchmark``.

Usage: ``python bench/microbenchmark.py [--compare-ray] [--compare-stdlib] ...``
(``--help`` lists the options). Uses ``<repo>/python`` when fleet is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def _main() -> int:
    if importlib.util.find_spec("fleet") is None:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        sys.path.insert(0, os.path.join(repo, "python"))
    from fleet._private.microbenchmark import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
