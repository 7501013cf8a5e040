"""The version tag every fleet process sends when it connects."""

from __future__ import annotations

import os
import platform


def version_tag() -> str:
    """"fleet X, Python Y": sent in every connection's handshake; a cluster
    refuses a node or driver whose tag differs, naming both (pickles and
    messages do not travel across versions). FLEET_VERSION_TAG overrides it,
    to test that refusal."""
    override = os.environ.get("FLEET_VERSION_TAG")
    if override:
        return override
    from fleet import __version__

    return f"fleet {__version__}, Python {platform.python_version()}"
