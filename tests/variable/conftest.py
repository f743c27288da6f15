"""Variable client tests: BEAM app nodes (tests/agents/beam_app.py) on the interop suite's epmd."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))

from beam_app import interop_conftest  # noqa: E402

epmd = interop_conftest("interop_conftest_for_variable").epmd
pytestmark = pytest.mark.otp
