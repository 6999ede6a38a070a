"""Fixtures of the simulator's tests: one HIL emulator on loopback per module (``emu``) and a
fresh specimen in it for each test (``fresh``). Helpers live in emulator_support.py."""

from __future__ import annotations

import pytest
from emulator_support import loopback_emulator


@pytest.fixture(scope="module")
def emu():
    """One emulator on loopback (no numba warm-up: the laser is never fired here)."""
    with loopback_emulator() as e:
        yield e


@pytest.fixture
def fresh(emu):
    emu.reset()
    return emu
