"""What a live view shows, kept small and thread-safe: the engine (or a file follower) writes
it, the web server's documents read it.

The writer's side is cheap on purpose: per readout block it bins the block's m/n and detector
positions with ``np.bincount`` (no Python per hit) and appends one trace row, all outside the
lock but the final additions. The readers copy what they draw under the lock.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: m/n bin width of the live spectrum, Da (a LEAP peak at 60 Da is ~0.06 Da wide)
BIN_DA = 0.02
#: hit-map bins across the detector diameter
HITMAP_BINS = 128
#: trace rows kept; beyond it every other row is dropped (older history at half resolution)
TRACE_ROWS = 4000
TRACE_FIELDS = ("time_s", "v_dc", "v_setpoint", "rate", "laser_pj")


@dataclass
class RangeBands:
    """The range table as the spectrum draws it: one band per range."""

    names: list[str]
    lo_da: np.ndarray
    hi_da: np.ndarray

    @classmethod
    def of(cls, table: Any) -> RangeBands:
        if table is None:
            return cls([], np.zeros(0), np.zeros(0))
        return cls(list(table.names), np.asarray(table.lo_da, float),
                   np.asarray(table.hi_da, float))


@dataclass
class Status:
    """Counters and state, copied whole by a reader."""

    state: str = "idle"
    ions: int = 0
    pulses: int = 0
    rate: float = 0.0
    v_setpoint: float = 0.0
    v_dc: float = math.nan
    laser_pj: float = math.nan
    step: int = 0
    blocks: int = 0
    hv_on: int | None = None  # known from a file's /log; a live run shows its state instead
    laser_on: int | None = None
    end_reason: str = ""
    safe_off_error: str = ""
    transitions: list[tuple[float, str, str]] = field(default_factory=list)
    updated_wall: float = 0.0


class LiveSnapshot:
    """Histograms, traces and counters of one run, written by one thread, read by many."""

    def __init__(self, *, title: str, detector_radius_mm: float, ranges: Any = None,
                 target_rate: float = math.nan, suspenders: list[str] | None = None,
                 mass_max_da: float | None = None, has_v_dc: bool = True):
        self.title = title
        self.has_v_dc = has_v_dc  # a measured V_dc trace (a file's /log has it)
        self.target_rate = target_rate
        self.suspenders = list(suspenders or [])
        self.bands = RangeBands.of(ranges)
        top = float(self.bands.hi_da.max()) * 1.25 if len(self.bands.hi_da) else 120.0
        self.mass_max_da = float(mass_max_da or min(300.0, max(100.0, top)))
        self.n_mass = round(self.mass_max_da / BIN_DA)
        self.detector_radius_mm = float(detector_radius_mm)
        self._lock = threading.Lock()
        self._spectrum = np.zeros(self.n_mass, np.int64)
        self._hitmap = np.zeros(HITMAP_BINS * HITMAP_BINS, np.int64)
        self._trace = {k: np.zeros(TRACE_ROWS) for k in TRACE_FIELDS}
        self._rows = 0  # trace rows held
        self._stride = 1  # keep one row in this many (doubles when the buffer fills)
        self._offered = 0  # rows offered since the last kept one
        self.trace_generation = 0  # changes when old rows are thinned: readers reload all
        self.trace_total = 0  # rows ever kept (readers stream from their last count)
        self.hist_version = 0
        self.status = Status()
        self._t0_wall = time.monotonic()

    # -- the writer
    def add_hits(self, mass_da: np.ndarray | None, det_x_mm: np.ndarray | None,
                 det_y_mm: np.ndarray | None) -> None:
        """Bin one block's hits (m/n and detector positions; any may be None)."""
        spec = hm = None
        if mass_da is not None and len(mass_da):
            i = (np.asarray(mass_da, np.float64) * (1.0 / BIN_DA)).astype(np.int64)
            i = i[(i >= 0) & (i < self.n_mass)]
            spec = np.bincount(i, minlength=self.n_mass)
        if det_x_mm is not None and det_y_mm is not None and len(det_x_mm):
            scale = HITMAP_BINS / (2 * self.detector_radius_mm)
            ix = ((np.asarray(det_x_mm, np.float64) + self.detector_radius_mm) * scale)
            iy = ((np.asarray(det_y_mm, np.float64) + self.detector_radius_mm) * scale)
            ok = (ix >= 0) & (ix < HITMAP_BINS) & (iy >= 0) & (iy < HITMAP_BINS)
            flat = iy[ok].astype(np.int64) * HITMAP_BINS + ix[ok].astype(np.int64)
            hm = np.bincount(flat, minlength=HITMAP_BINS * HITMAP_BINS)
        if spec is None and hm is None:
            return
        with self._lock:
            if spec is not None:
                self._spectrum += spec
            if hm is not None:
                self._hitmap += hm
            self.hist_version += 1

    def add_trace(self, **row: float) -> None:
        """One row of the traces (``TRACE_FIELDS``; a missing field is NaN)."""
        with self._lock:
            self._offered += 1
            if self._offered < self._stride:
                return
            self._offered = 0
            if self._rows == TRACE_ROWS:  # thin the history: keep every other row
                for k in TRACE_FIELDS:
                    kept = self._trace[k][::2].copy()
                    self._trace[k][:] = 0.0
                    self._trace[k][:len(kept)] = kept
                self._rows = (TRACE_ROWS + 1) // 2
                self._stride *= 2
                self.trace_generation += 1
            for k in TRACE_FIELDS:
                self._trace[k][self._rows] = float(row.get(k, math.nan))
            self._rows += 1
            self.trace_total += 1

    def update_status(self, **values: Any) -> None:
        with self._lock:
            for k, v in values.items():
                setattr(self.status, k, v)
            self.status.updated_wall = time.monotonic()

    def reset(self) -> None:
        """Forget everything (the followed file was replaced by another)."""
        with self._lock:
            self._spectrum[:] = 0
            self._hitmap[:] = 0
            self._rows = self._offered = 0
            self._stride = 1
            self.trace_generation += 1
            self.hist_version += 1
            self.status = Status()

    def wall_s(self) -> float:
        """Seconds of wall time since the snapshot was made."""
        return time.monotonic() - self._t0_wall

    # -- the readers
    def histograms(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(version, spectrum counts, hit map [y, x]) as copies."""
        with self._lock:
            return (self.hist_version, self._spectrum.copy(),
                    self._hitmap.reshape(HITMAP_BINS, HITMAP_BINS).copy())

    def traces(self, generation: int, have: int) -> tuple[int, int, dict[str, np.ndarray], bool]:
        """The trace rows a reader lacks: (generation, total, rows, replace_all). A reader that
        holds ``have`` rows of ``generation`` gets only the new rows; after a thinning, all."""
        with self._lock:
            replace = generation != self.trace_generation
            if replace:
                start = 0
            else:
                start = max(0, self._rows - (self.trace_total - have))
            rows = {k: self._trace[k][start:self._rows].copy() for k in TRACE_FIELDS}
            return self.trace_generation, self.trace_total, rows, replace

    def status_copy(self) -> Status:
        with self._lock:
            s = Status(**{k: getattr(self.status, k) for k in Status.__dataclass_fields__})
            s.transitions = list(self.status.transitions)
            return s

    def mass_centres_da(self) -> np.ndarray:
        return (np.arange(self.n_mass) + 0.5) * BIN_DA

    def hitmap_extent_mm(self) -> float:
        return self.detector_radius_mm
