"""Fixtures of the simulator's tests: one HIL emulator on loopback per module (``emu``) and a
fresh specimen in it for each test (``fresh``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from apt_daq.sim.emulator import Emulator, load_target

HIL_RUN = Path(__file__).resolve().parents[2] / "configs" / "runs" / "hil-nmc811-cr.yaml"


@pytest.fixture(scope="module")
def emu():
    """One emulator on loopback (no numba warm-up: the laser is never fired here)."""
    ins, sp, temp_k, seed, _ = load_target(HIL_RUN)
    e = Emulator(ins, sp, base_temperature_k=temp_k, seed=seed, speed=20.0,
                 warm_up=False).start()
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
def fresh(emu):
    emu.reset()
    return emu
