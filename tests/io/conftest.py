"""Fixtures of the format tests: the synthetic runs of synthetic_runs.py (apav's real Si data:
tests/conftest.py's apav_data).

Helpers live in synthetic_runs.py, not here: a test that imports `conftest` gets whichever
conftest.py pytest loaded last (tests/sim has one too), so tests import synthetic_runs by name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_runs import RANGES, make_run


@pytest.fixture
def rrng(tmp_path: Path) -> Path:
    p = tmp_path / "ranges.rrng"
    p.write_text(RANGES)
    return p


@pytest.fixture
def run(tmp_path: Path, rrng: Path) -> Path:
    return make_run(tmp_path / "run.h5", with_ranges=rrng)
