"""Docs tests reuse the interop epmd fixture and the BEAM app nodes of tests/agents."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))

from beam_app import interop_conftest  # noqa: E402

epmd = interop_conftest("interop_conftest_for_docs").epmd
