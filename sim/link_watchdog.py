"""The instruments' link watchdog, as the emulator's wire interfaces keep it.

Armed with ``SYST:COMM:WATC <s>`` (line protocol ``W <s>``), a wire that receives no command
line for ``watchdog_s`` seconds of wall time (the link's time, whatever the emulator's speed)
turns its device's output off (``DeviceModel.watchdog_expired``): a controller that was
killed, hung up or lost its cable cannot leave HV or the laser on. Any command line feeds it
(:meth:`LinkWatchdog.fed`); whoever serves the interface calls
:meth:`LinkWatchdog.check_watchdog` periodically (the emulator, on every tick of its pulse
clock). docs/protocols.md, "Link watchdog".
"""

from __future__ import annotations

import math
import time
from typing import Any

from apt_daq.sim.devices import DeviceError

from apt_daq.wire.scpi_commands import DATA_OUT_OF_RANGE, DEVICE_SPECIFIC, ERROR_MESSAGES

WATCHDOG_MAX_S = 3600.0  # the longest link watchdog an instrument accepts


class LinkWatchdog:
    """The watchdog state of one wire: its timeout (0: disarmed), when a line last arrived,
    whether it has fired since. A wire interface mixes it in and supplies ``model``."""

    model: Any

    def __init__(self) -> None:
        self.watchdog_s = 0.0
        self.watchdog_fired = False
        self.last_line_wall = time.monotonic()

    def fed(self) -> None:
        """A command line arrived: the timer starts again."""
        self.last_line_wall = time.monotonic()
        self.watchdog_fired = False

    def set_watchdog(self, seconds: float) -> None:
        """Arm (seconds > 0) or disarm (0); the timer starts now."""
        if not (math.isfinite(seconds) and 0.0 <= seconds <= WATCHDOG_MAX_S):
            raise DeviceError(DATA_OUT_OF_RANGE, f"{ERROR_MESSAGES[DATA_OUT_OF_RANGE]}: "
                              f"watchdog {seconds:g} s (0 ... {WATCHDOG_MAX_S:g})")
        self.watchdog_s = float(seconds)
        self.fed()

    def check_watchdog(self, now_wall: float | None = None) -> bool:
        """True once when the armed watchdog runs out: the device's output is then off."""
        if self.watchdog_s <= 0 or self.watchdog_fired:
            return False
        now = time.monotonic() if now_wall is None else now_wall
        if now - self.last_line_wall <= self.watchdog_s:
            return False
        self.watchdog_fired = True
        self.model.watchdog_expired()
        self.watchdog_note(f"{ERROR_MESSAGES[DEVICE_SPECIFIC]}: watchdog: no command for "
                           f"{self.watchdog_s:g} s, output off")
        return True

    def watchdog_note(self, message: str) -> None:
        """Record that the watchdog fired where the wire's protocol reports errors."""
