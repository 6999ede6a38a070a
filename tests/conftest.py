import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba-cache"))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def configs() -> Path:
    return ROOT / "configs"
