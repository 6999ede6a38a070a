import os
from pathlib import Path

import pytest

from apt_daq.shipped import default_numba_cache

ROOT = Path(__file__).resolve().parents[1]
default_numba_cache()  # .numba-cache/src-<digest>, the CLI's (apt_daq.shipped)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def configs() -> Path:
    return ROOT / "configs"


@pytest.fixture(scope="session")
def apav_data() -> Path:
    """The real LEAP Si dataset that ships inside the apav package (AP Suite's Si.apt, Si.pos,
    Si.epos and a human's Si.RRNG): data nobody here made, the reference of the real-data
    tests. Skips where apav or its test data is not installed."""
    apav = pytest.importorskip("apav")
    d = Path(apav.__file__).parent / "tests"
    if not all((d / f).exists() for f in ("Si.apt", "Si.epos", "Si.pos", "Si.RRNG")):
        pytest.skip("apav's Si test data not installed")
    return d
