"""The run engine's states and results: what a run reports and what /log stores."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class State(enum.IntEnum):
    IDLE = 0
    CONNECTING = 1
    RAMPING = 2
    ACQUIRING = 3
    PAUSED = 4
    STOPPING = 5
    SAFE = 6
    DONE = 7
    FAILED = 8
    ABORTED = 9



@dataclass
class RunResult:
    state: State
    reason: str
    ions: int
    pulses: int
    path: Path | None
    voltage_range_v: tuple[float, float] = (0.0, 0.0)
    counters: dict[str, int] = field(default_factory=dict)
    tally: Any = None  # the summary's counts (engine.tally.RunTally), when asked for


class RunAborted(Exception):
    pass


#: /log ``hv_on``/``laser_on`` when the state could not be read back after a failed safe-off
UNKNOWN_FLAG = 255
