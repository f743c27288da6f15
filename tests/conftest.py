"""Fixtures every test folder may use. OTP-node fixtures live in tests/interop/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def fixture_data() -> Path:
    """Small derived subsets of the real data sets, in the repo (tests/fixtures/README.md)."""
    return FIXTURES
