"""Paths to real benchmark files: the repository's example copies (always there) and the
project's shared benchmark folder (only on machines that have it; tests that need it skip)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "benchmarks"
# The shared benchmark folder sits beside the checkout (as in CI), or where the variable says.
DEFAULT_SHARED = str(Path(__file__).resolve().parents[3] / "shared" / "benchmarks")
SHARED = Path(os.environ.get("PROSPECT_SHARED_BENCHMARKS", DEFAULT_SHARED))


@pytest.fixture(scope="session")
def examples() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "SOURCES.md").is_file():
        pytest.skip(f"no shared benchmark folder at {SHARED} (set PROSPECT_SHARED_BENCHMARKS)")
    return SHARED
