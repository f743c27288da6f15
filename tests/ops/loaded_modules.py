"""Exposed by the plain-node test (`--expose loaded=loaded_modules`): which modules are loaded."""

import sys


def names() -> list[str]:
    """Top-level names of every module this Python process has imported."""
    return sorted({name.split(".")[0] for name in sys.modules})
