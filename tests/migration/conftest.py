"""Migration tests from Python: BEAM app nodes (tests/agents/beam_app.py) on the interop epmd,
with the ExUnit suite's test agent (beam/test/support/recording_agent.ex) compiled for them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))

from beam_app import BEAM_DIR, compiled_paths, interop_conftest  # noqa: E402

epmd = interop_conftest("interop_conftest_for_migration").epmd
pytestmark = pytest.mark.otp


@pytest.fixture(scope="module")
def recording_agent_ebin() -> Iterator[str]:
    """A directory holding DSPEx.Test.RecordingAgent (and DSPEx.Test.Sender), compiled."""
    out = tempfile.mkdtemp(prefix="recording_agent")
    try:
        args = ["elixirc", "-o", out]
        for path in compiled_paths():
            args += ["-pa", path]
        args.append(str(BEAM_DIR / "test" / "support" / "recording_agent.ex"))
        subprocess.run(args, check=True, capture_output=True, timeout=300)
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)
