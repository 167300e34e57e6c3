"""Shared fixtures. Real data comes from ``../shared/data`` through ``shared_data`` alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public corpora in ../shared/data (see its README); skips with a reason where absent."""
    path = Path(os.environ.get("LMPIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not (path / "README.md").exists():
        pytest.skip(f"real test data not found at {path} (set LMPIPE_SHARED_DATA); present in CI")
    return path


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT
