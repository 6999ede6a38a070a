"""Suspenders: conditions that pause a run while they fail (bluesky-style)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apt_daq.drivers import Instruments


@dataclass
class Suspender:
    """Pause the run while ``ok(instruments)`` is False; resume when it has been True again
    for ``settle_s`` (bluesky-style). ``ok`` must be cheap: it is polled once per block."""

    name: str
    ok: Callable[[Instruments], bool]
    settle_s: float = 0.0


def default_suspenders() -> list[Suspender]:
    def interlock_closed(ins: Instruments) -> bool:
        return not ins.laser.interlock_open()

    seen_dropped = [0]

    def detector_not_overflowing(ins: Instruments) -> bool:
        """False while the front end reports an overflow, and once after any block in which it
        dropped records (latched: a short overflow between two polls is not missed)."""
        dropped = int(ins.dld.counters.get("dropped", 0))
        grew, seen_dropped[0] = dropped > seen_dropped[0], dropped
        return not (grew or ins.dld.overflow())

    return [Suspender("laser interlock", interlock_closed),
            Suspender("detector overflow", detector_not_overflowing)]
