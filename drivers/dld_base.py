"""The delay-line detector's driver interface (raw records in chunks, counters) and
:class:`SimulatedDetector`, what a simulated one offers beyond a real one."""

from __future__ import annotations

import abc
from typing import Protocol, runtime_checkable

import numpy as np
from apt_daq.drivers.clock import Clock
from apt_daq.drivers.instrument import Instrument


class DelayLineDetector(Instrument):
    """The delay-line detector front end: raw records (``apt_daq.hits.RAW_DTYPE``) in chunks.

    ``counters``: ``pulses`` (pulses covered so far), ``hits`` (records), ``multi_hits``
    (pulses with two or more records), ``dropped`` (records the front end could not deliver).
    """

    kind = "DLD"

    def __init__(self, resource: str, *, clock: Clock | None = None):
        super().__init__(resource, clock=clock)
        self.counters: dict[str, int] = {"pulses": 0, "hits": 0, "multi_hits": 0, "dropped": 0}
        self.running = False

    @abc.abstractmethod
    def start(self) -> None:
        """Start acquiring."""

    @abc.abstractmethod
    def read_chunk(self, timeout_s: float) -> np.ndarray:
        """The next block of raw records (RAW_DTYPE), waiting at most ``timeout_s``."""

    def arm(self) -> None:
        """Hint that the caller will not touch the instruments until the next ``read_chunk``.

        A real front end acquires continuously, so this does nothing; the simulated one starts
        firing the next chunk in the background, overlapping it with the caller's processing.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop acquiring (idempotent)."""

    def overflow(self) -> bool:
        """True while the front end reports that it is dropping records. A front end that
        cannot tell says False (its drops, if it counts any, are in ``counters["dropped"]``)."""
        return False

    def safe_off(self) -> None:
        if self.connected and self.running:
            self.stop()

    def _count(self, raw: np.ndarray, pulses: int, dropped: int = 0) -> None:
        self.counters["pulses"] += int(pulses)
        self.counters["hits"] += len(raw)
        self.counters["dropped"] += int(dropped)
        if len(raw) > 1:
            p = raw["pulse"]
            same = p[1:] == p[:-1]
            if np.all(p[1:] >= p[:-1]):  # pulse order (every front end's): count runs
                self.counters["multi_hits"] += int(np.count_nonzero(same[1:] & ~same[:-1])
                                                   + bool(same[0]))
                return
            _, n = np.unique(p, return_counts=True)
            self.counters["multi_hits"] += int(np.count_nonzero(n > 1))


@runtime_checkable
class SimulatedDetector(Protocol):
    """What a simulated detector offers beyond a real one (``sim_backends.SimDld``): the truth
    behind each chunk and the specimen's ion table. The run engine asks
    ``isinstance(dld, SimulatedDetector)`` and stores both; a real front end has neither."""

    @property
    def ion_table(self) -> list[tuple[str, float, int]]:
        """(name, main m/n Da, charge) of every ion species; the truth's species index it."""
        ...

    def read_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """(truth aligned row for row with the last chunk, ions lost in it), TRUTH_DTYPE."""
        ...
