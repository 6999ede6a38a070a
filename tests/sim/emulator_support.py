"""The emulator on loopback, in this process: its instruments reached over their wires (the
``emu`` fixtures of tests/sim/conftest.py and tests/drivers/test_watchdog_keepalive.py).

A module of its own, imported by this name: a test that imports `conftest` gets whichever
conftest.py pytest loaded last."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from apt_daq.sim.emulator import Emulator, load_target

HIL_RUN = Path(__file__).resolve().parents[2] / "configs" / "runs" / "hil-nmc811-cr.yaml"


@contextmanager
def loopback_emulator() -> Iterator[Emulator]:
    """The HIL target's emulator on loopback at 20x speed, stopped on leaving (no numba
    warm-up: the laser is never fired by these tests)."""
    ins, sp, temp_k, seed, _ = load_target(HIL_RUN)
    e = Emulator(ins, sp, base_temperature_k=temp_k, seed=seed, speed=20.0,
                 warm_up=False).start()
    try:
        yield e
    finally:
        e.stop()
