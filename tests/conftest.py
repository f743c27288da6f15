"""Fixtures every test folder may use. OTP-node fixtures live in tests/interop/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The read-only real data sets: $DSPEX_SHARED_DATA, else ../shared/data beside the repo."""
    return Path(os.environ.get("DSPEX_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path} (set DSPEX_SHARED_DATA)")
    return path
