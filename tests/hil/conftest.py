"""Fixtures of the HIL tests (helpers in hil_support.py)."""

from __future__ import annotations

import pytest
from hil_support import EmulatorProcess


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory):
    """One emulator per test module; each test calls ``reset()`` for a fresh specimen."""
    emu = EmulatorProcess(tmp_path_factory.mktemp("emu"))
    try:
        yield emu
    finally:
        emu.stop()
