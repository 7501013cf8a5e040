"""fleet's version, and the version tag every fleet process sends when it connects."""

from __future__ import annotations

import os
import platform

__version__ = "0.1.0"


def version_tag() -> str:
    """"fleet X, Python Y": sent in every connection's handshake; a cluster
    refuses a node or driver whose tag differs, naming both (pickles and
    messages do not travel across versions). FLEET_VERSION_TAG overrides it,
    to test that refusal."""
    override = os.environ.get("FLEET_VERSION_TAG")
    if override:
        return override
    return f"fleet {__version__}, Python {platform.python_version()}"
