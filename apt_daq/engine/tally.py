"""The end-of-run summary's counts, taken from the stream as it is written (no second pass).

``apt-daq run`` ends with the composition in the run's ROI (``analysis.roi``) and a few ratios,
as ``apt-daq analyze`` computes them: voltage and bowl corrections fitted on a reference peak
(:func:`apt_daq.pipeline.ions.fit_run_calibration`), the corrected m/n ranged, positions from
the streaming reconstruction, counts per range inside the ROI. Reading the file back for that
cost as much as the run itself. :class:`RunTally` does it block by block instead:

- the first ``FIT_SAMPLE`` hits are held in memory (bounded: ~66 MB) and the calibration is
  fitted on them, with the same function ``analyze`` uses, on a thread when they are complete
  (or at the end of a shorter run: then on every hit, as ``analyze`` does; a longer run's fit is on its
  first ``FIT_SAMPLE`` hits, ``analyze``'s on a sample strided over the whole run);
- from then on each block is calibrated, ranged, reconstructed (in evaporation order, so the
  depths are the same) and counted as it goes by.

The counts are those of ``analyze`` on the same calibration; the CLI turns them into the
composition with :mod:`apt_daq.analysis` (the engine sits below it).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from apt_daq.config import RunFile
from apt_daq.rangetable import RangeTable

log = logging.getLogger("apt_daq.run")
FIT_SAMPLE = 2_000_000  # hits the calibration is fitted on (pipeline.ions.FIT_SAMPLE)


class _HeldHits:
    """The held hits as the reader the calibration fit and the reconstructor ask."""

    def __init__(self, parts: list[np.ndarray], run_file: RunFile, meta: dict[str, Any]):
        self.parts = parts
        self.run_file = run_file
        self.instrument = run_file.instrument
        self.meta = meta
        self.path = "(the run being acquired)"

    def has(self, name: str) -> bool:
        return name == "hits" and bool(self.parts)

    def count(self, name: str) -> int:
        return sum(len(p) for p in self.parts) if name == "hits" else 0

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        need, n = [], 0
        for p in self.parts:  # only the parts up to ``stop`` are joined
            if n >= stop:
                break
            need.append(p)
            n += len(p)
        return np.concatenate(need)[start:stop]

    def iter(self, name: str, chunk: int):
        yield from self.parts


class RunTally:
    """Counts per range of all hits and of those in the ROI, block by block.

    ``background``: fit the calibration on a thread once the sample is complete (the engine's
    thread is the run's critical path); blocks that arrive meanwhile are held and counted, in
    order, once the fit is in. The fit sees the same hits either way, so the counts are the
    same."""

    def __init__(self, run_file: RunFile, ranges: RangeTable, meta: dict[str, Any], *,
                 fit_sample: int = FIT_SAMPLE, background: bool = True):
        from apt_daq.roi import parse_roi

        self.run_file = run_file
        self.ranges = ranges
        self.meta = meta
        self.roi = parse_roi(run_file.analysis.roi)
        self.fit_sample = int(fit_sample)
        self.background = background
        self.held: list[np.ndarray] = []
        self.n_held = 0
        self.calibration: Any = None
        self._rec: Any = None
        self._fit: threading.Thread | None = None
        self._fitted: list[Any] = []  # (calibration, reconstructor) or the fit's exception
        self.hits = 0  # every hit
        self.in_roi = 0  # hits inside the ROI, ranged or not
        self.counts = np.zeros(len(ranges), np.int64)  # per range, every hit
        self.counts_roi = np.zeros(len(ranges), np.int64)  # per range, inside the ROI

    @staticmethod
    def applies(run_file: RunFile, ranges: RangeTable | None) -> bool:
        """The stream can give the summary: there are ranges to count in, and the ROI is placed
        before the run ends (a box without a depth sits on the whole run's depth range)."""
        from apt_daq.roi import parse_roi

        roi = parse_roi(run_file.analysis.roi)
        return bool(ranges is not None and len(ranges)) and not (roi and roi.needs_depth)

    def add(self, hits: np.ndarray) -> None:
        """One block's hits (HIT_DTYPE, in evaporation order; kept, not copied)."""
        if not len(hits):
            return
        self.hits += len(hits)
        if self._fit is not None and not self._fit.is_alive():
            self._adopt()
        if self.calibration is not None:
            self._count(hits)
            return
        self.held.append(hits)
        self.n_held += len(hits)
        if self._fit is None and self.n_held >= self.fit_sample:
            sample = list(self.held)
            if self.background:
                self._fit = threading.Thread(target=self._fit_on, args=(sample,), daemon=True,
                                             name="tally-fit")
                self._fit.start()
            else:
                self._fit_on(sample)
                self._adopt()

    def finish(self) -> RunTally:
        """The fit's result, or a fit on what is held if the run was shorter than the
        sample; the tally."""
        if self._fit is not None:
            self._fit.join()
            self._adopt()
        elif self.calibration is None and self.held:
            self._fit_on(list(self.held))
            self._adopt()
        return self

    def _fit_on(self, sample: list[np.ndarray]) -> None:
        from apt_daq.pipeline.ions import fit_run_calibration, reconstructor_for

        try:
            reader = _HeldHits(sample, self.run_file, self.meta)
            cal = fit_run_calibration(reader, self.ranges, self.run_file.analysis)
            self._fitted.append((cal, reconstructor_for(reader)))
        except Exception as e:  # raised on the engine's thread by _adopt
            self._fitted.append(e)

    def _adopt(self) -> None:
        """Take the fit, then count what was held, in order."""
        if self.calibration is not None or not self._fitted:
            return
        got = self._fitted[0]
        if isinstance(got, Exception):
            raise got
        self.calibration, self._rec = got
        held, self.held, self.n_held = self.held, [], 0
        for h in held:
            self._count(h)
    def _count(self, hits: np.ndarray) -> None:
        from apt_daq.pipeline.corrections import corrected_mass_kernel
        from apt_daq.pipeline.ranging import range_masses

        cal, inst = self.calibration, self.run_file.instrument
        t0 = float(cal.t0_ns if cal.t0_ns is not None else inst.t0_ns)
        lf = float(cal.flight_path_mm if cal.flight_path_mm is not None else inst.flight_path_mm)
        mass = np.empty(len(hits), np.float32)
        corrected_mass_kernel(hits["tof"], hits["det_x"], hits["det_y"], hits["v_dc"],
                              hits["v_pulse"], t0, lf, float(cal.beta), cal.vc, cal.bc, mass)
        ion = range_masses(mass, self.ranges)
        ranged = ion >= 0
        k = len(self.ranges)
        self.counts += np.bincount(ion[ranged].astype(np.int64), minlength=k)
        if self.roi is None:
            inside = np.ones(len(hits), bool)
        else:
            x, y, z = self._rec.process(hits)
            inside = self.roi.mask(x, y, z)
        self.in_roi += int(inside.sum())
        self.counts_roi += np.bincount(ion[inside & ranged].astype(np.int64), minlength=k)
