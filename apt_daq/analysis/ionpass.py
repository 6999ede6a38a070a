"""``analyze``'s one pass over the ranged, positioned ion stream, fused into one kernel.

:class:`IonPass` takes the stream's chunks (:class:`~apt_daq.pipeline.ions.IonChunk`) and
keeps: the calibrated spectrum of every hit (0.01 Da, to rank the peaks whose resolving power
is measured: the pass that used to read the run once more for it), the spectra of the
selected hits (1 mDa and the per-peak table's 0.5 mDa), range counts (all, in the ROI), the
ROI's FDA blocks, the depth profile, the detector hit map, the MRP windows' float32 m/n
counters (:class:`~apt_daq.analysis.mrp.WindowCounts`' counters, for the main peaks of the
:data:`TRACKED_PEAKS` ions most counted in the first chunk: which five are measured is known
only from the whole spectrum, and a second read counts any the first chunk missed),
subsampled slices, the truth score and the multi-hit events.

:func:`pass_kernel` does all but the MRP windows (:func:`window_kernel`), slices, truth and
multi-hits (:func:`~apt_daq.analysis.multihit.events_kernel`) in one loop over the chunk's
ions; the windows and multi-hits run beside it on a second thread (:meth:`IonPass.consume`).
Each result is exactly what the separate passes computed (the same float arithmetic: the
histograms of :func:`~apt_daq.pipeline.histogram.hist_kernel` and
:func:`~apt_daq.pipeline.histogram.hist2d_kernel`, np.bincount's counts, the blocks of
:func:`~apt_daq.analysis.fda.block_counts_kernel` over the concatenated sequence, the profile's
float32 depth bins); tests/analysis/test_ionpass.py holds it to the numpy accumulators.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numba import njit

from apt_daq.analysis.fda import FdaAccumulator
from apt_daq.analysis.mrp import WindowCounts, main_peaks, mrp_window
from apt_daq.analysis.multihit import MultiHitAccumulator
from apt_daq.analysis.profile import ProfileAccumulator
from apt_daq.analysis.roi import Roi
from apt_daq.analysis.truth import TruthScorer
from apt_daq.pipeline.histogram import MassHistogram
from apt_daq.rangetable import RangeTable

SLICE_POINTS = 300_000
PEAK_BIN_DA = 0.0005  # bins of the spectrum the per-peak table is measured on
WINDOW_CELL_DA = 0.05  # the cells that list which MRP windows may hold an m/n
MRP_PEAKS = 5  # the most counted ions whose resolving power is measured
SPECTRUM_CAP_DA = 1000.0
"""The spectrum of ``analyze`` (1 mDa bins, :attr:`IonPass.spectrum`) reaches the highest m/n
of the selected hits, in steps of 50 Da, up to this (1 M bins, 8 MB): every peak, as AP Suite
shows the whole recorded range (it stopped 20 Da above the last range: 1.6 % of apav's Si
run, up to 378 Da, beyond it)."""
TRACKED_PEAKS = 6
"""Ions whose MRP windows the pass counts from the first chunk on: the most counted in it.
An ion that rises into the five later (a coating's shell evaporates first) is counted from
then on, and the chunks before by a second read of them alone (:meth:`IonPass.add_windows`)."""


@njit(cache=True, nogil=True)
def pass_kernel(start, mass, ion, z, det_x, det_y, inside, has_roi,  # the chunk
                spec, spec_inv, hist, hist_inv, fine, fine_inv,  # spectra (lo = 0)
                rc_all, rc_roi, hm_edges, hitmap,  # range counts, hit map
                ion_of_range, fda_index, fda_block, fda_obs, fda_state,  # FDA
                prof_counts, prof_lo, bin_nm, atoms, prof_seen):  # profile
    """Accumulate ions ``start:`` of one chunk (see module doc); ``spec`` empty: not counted
    here. Returns the index of the first ion not taken: ``len(mass)`` when done, else the ion
    whose depth bin (``prof_seen[2]``) lies outside ``prof_counts`` (rows from bin
    ``prof_lo``): the caller grows it and calls again from there. ``fda_state``: [ions in the
    open block, its count per species...]; ``prof_seen``: [lowest, highest bin taken,
    the bin asked for]; ``inside``: the ROI mask when ``has_roi``. The bins are written out
    in the loop, not taken from helpers: an array handed to a helper per ion costs numba's
    reference counting (~40 ns an ion)."""
    n = mass.shape[0]
    nb_hm = hm_edges.shape[0] - 1
    e0 = hm_edges[0]
    e1 = hm_edges[nb_hm]
    inv_hm = nb_hm / (e1 - e0)
    n_ranges = rc_all.shape[0]
    n_sp = fda_index.shape[0]
    n_el = atoms.shape[1]
    n_rows = prof_counts.shape[0]
    n_spec = spec.shape[0]
    n_hist = hist.shape[0]
    n_fine = fine.shape[0]
    bin32 = np.float32(bin_nm)
    for i in range(start, n):
        r = np.int64(ion[i])
        roi = inside[i] if has_roi else True
        # the depth bin first: an ion outside the profile's rows is taken on the next call
        b = 0
        take_z = False
        if roi and r >= 0:
            zi = z[i]
            if np.isfinite(zi):
                b = int(np.floor(np.float32(zi) / bin32))
                take_z = True
                if b < prof_lo or b >= prof_lo + n_rows:
                    prof_seen[2] = b
                    return i
        m = mass[i]
        fm = np.float64(m)
        if fm >= 0.0:  # hist_kernel's bins (lo = 0), written out: see the docstring
            q = fm * spec_inv
            if q < n_spec:
                spec[int(q)] += 1
            q = fm * hist_inv
            if q < n_hist:
                hist[int(q)] += 1
            q = fm * fine_inv
            if q < n_fine:
                fine[int(q)] += 1
        u = np.float64(det_x[i])
        v = np.float64(det_y[i])
        if u >= e0 and u <= e1 and v >= e0 and v <= e1:  # hist2d_kernel's bins
            gu = min(max(int((u - e0) * inv_hm), 0), nb_hm - 1)
            while gu > 0 and hm_edges[gu] > u:
                gu -= 1
            while gu < nb_hm - 1 and hm_edges[gu + 1] <= u:
                gu += 1
            gv = min(max(int((v - e0) * inv_hm), 0), nb_hm - 1)
            while gv > 0 and hm_edges[gv] > v:
                gv -= 1
            while gv < nb_hm - 1 and hm_edges[gv + 1] <= v:
                gv += 1
            hitmap[gu, gv] += 1
        if r >= 0 and r < n_ranges:
            rc_all[r] += 1
        if not roi:
            continue
        if r >= 0 and r < n_ranges:
            rc_roi[r] += 1
            if n_sp > 0:
                k = ion_of_range[r]
                for s in range(n_sp):
                    if k == fda_index[s]:
                        fda_state[1 + s] += 1
                fda_state[0] += 1
                if fda_state[0] == fda_block:
                    for s in range(n_sp):
                        fda_obs[s, fda_state[1 + s]] += 1
                        fda_state[1 + s] = 0
                    fda_state[0] = 0
        if take_z:
            row = b - prof_lo
            for j in range(n_el):
                prof_counts[row, j] += atoms[r, j]
            if b < prof_seen[0]:
                prof_seen[0] = b
            if b > prof_seen[1]:
                prof_seen[1] = b
    return n


@njit(cache=True, nogil=True)
def window_kernel(mass, mbits, inside, has_roi, cell_inv, cell_start, cell_win, win_base, win_n,
                  win_off, win_low, win_high):  # fmt: skip
    """:func:`pass_kernel`'s MRP window counts alone (:class:`PeakWindows`)."""
    n_cell = cell_start.shape[0] - 1
    for i in range(mass.shape[0]):
        if has_roi and not inside[i]:
            continue
        fm = np.float64(mass[i])
        if fm >= 0.0:
            c = fm * cell_inv
            if c < n_cell:
                bits = np.int64(mbits[i])
                ci = int(c)
                for q in range(cell_start[ci], cell_start[ci + 1]):
                    w = cell_win[q]
                    j = bits - win_base[w]
                    if j >= 0 and j < win_n[w]:
                        k = win_off[w] + j
                        c = win_low[k] + 1
                        if c == 256:
                            win_low[k] = 0
                            win_high[k] += 256
                        else:
                            win_low[k] = c


def counts_in_ranges(counts: np.ndarray, edges: np.ndarray, ranges: RangeTable) -> np.ndarray:
    """Spectrum counts whose bin centre lies in each range (to rank peaks, not to quantify)."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    a = np.searchsorted(centres, ranges.lo_da, side="left")
    b = np.searchsorted(centres, ranges.hi_da, side="left")
    cum = np.concatenate([[0], np.cumsum(counts)])
    return cum[b] - cum[a]


class PeakWindows:
    """The MRP window counters (:class:`WindowCounts`) of the main peaks of ions ``names`` of
    the range table, in one flat array, and the cells (:data:`WINDOW_CELL_DA`) that list which
    windows may hold an m/n. Untouched counters take no memory."""

    def __init__(self, ranges: RangeTable, names: list[str]) -> None:
        self.peaks: dict[str, float] = {}
        wins: list[WindowCounts] = []
        for name in names:
            try:
                (peak,) = main_peaks(ranges, {name: 1.0}, top=1)
            except (KeyError, ValueError):  # main_peaks will say so if the ion is measured
                continue
            self.peaks[name] = peak[1]
            wins.append(WindowCounts(*mrp_window(peak[1], name)))
        sizes = np.array([len(w.counts) for w in wins], dtype=np.int64)
        self.off = (np.cumsum(sizes) - sizes).astype(np.int64)
        self.n = sizes
        self.base = np.array([w.base for w in wins], dtype=np.int64)
        # a counter is low + high: a byte per float32 value, 256 carried to an int64 (a
        # cache line holds 64 counters, the int64s are touched once per 256 ions)
        self.low = np.zeros(int(sizes.sum()), dtype=np.uint8)
        self.high = np.zeros(int(sizes.sum()), dtype=np.int64)
        self._index = {name: i for i, name in enumerate(self.peaks)}  # wins' counts unused
        self.cell_inv = 1.0 / WINDOW_CELL_DA
        lo = [float(np.array(w.base, np.int32).view(np.float32)) for w in wins]
        hi = [float(np.array(w.base + k - 1, np.int32).view(np.float32)) if k else -1.0
              for w, k in zip(wins, sizes, strict=True)]
        n_cell = int(max(hi, default=0.0) * self.cell_inv) + 2
        lists: list[list[int]] = [[] for _ in range(n_cell)]
        for w, (a, b) in enumerate(zip(lo, hi, strict=True)):
            for c in range(int(a * self.cell_inv), int(b * self.cell_inv) + 1):
                lists[c].append(w)
        self.cell_start = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(
            np.int64)
        self.cell_win = np.array([w for x in lists for w in x], dtype=np.int64)

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def counts(self, name: str) -> tuple[int, np.ndarray]:
        """(bits of the first float32, int64 counts) of ion ``name``'s whole window."""
        i = self._index[name]
        o, k = int(self.off[i]), int(self.n[i])
        return int(self.base[i]), self.high[o : o + k] + self.low[o : o + k]

    @staticmethod
    def window_of(parts: list[PeakWindows], name: str) -> WindowCounts:
        """Ion ``name``'s window, the sum of its counts in ``parts`` (which count the same
        window over different chunks), over the span of values seen."""
        base, total = parts[0].counts(name)
        for p in parts[1:]:
            total += p.counts(name)[1]
        seen = np.flatnonzero(total)
        a, b = (int(seen[0]), int(seen[-1]) + 1) if len(seen) else (0, 0)
        return WindowCounts.of_counts(base + a, total[a:b])

    def add(self, mass: np.ndarray, inside: np.ndarray | None) -> None:
        """The float32 m/n ``mass`` (where ``inside``, if given) into the windows."""
        window_kernel(mass, mass.view(np.int32), inside if inside is not None else mass[:0],
                      inside is not None, *self.kernel_args())  # fmt: skip

    def kernel_args(self) -> tuple:
        return (self.cell_inv, self.cell_start, self.cell_win, self.base, self.n, self.off,
                self.low, self.high)


class IonPass:
    """What analyze's pass over the ranged, positioned stream accumulates (see module doc):
    ``add`` each chunk, then ``finish``."""

    def __init__(self, ranges: RangeTable, roi: Roi | None, det_r: float, n_hits: int,
                 scorer: TruthScorer | None, acfg):
        max_da = float(ranges.hi_da.max()) + 20.0
        self.ranges, self.roi, self.scorer = ranges, roi, scorer
        self.spec = MassHistogram(0.01, 300.0)  # every hit's: ranks the peaks MRP measures
        self.hist = MassHistogram(0.001, max_da)
        # the same bins above it, grown with the data (:meth:`_accumulate`): see spectrum
        self.tail = MassHistogram(0.001, self.hist.edges[-1], self.hist.edges[-1])
        self.fine = MassHistogram(PEAK_BIN_DA, max_da)  # the per-peak table's spectrum
        self.rc_all = np.zeros(len(ranges), dtype=np.int64)
        self.rc_roi = np.zeros(len(ranges), dtype=np.int64)
        # per FDA species: (its ion's index, the streaming FDA of the ROI's ranged ions)
        ion_names = ranges.ions
        self.ion_of_range = ranges.ion_index().astype(np.int64)
        self.fda = {sp: (ion_names.index(sp), FdaAccumulator(acfg.fda_block_ions, sp))
                    for sp in acfg.fda_ions if sp in ion_names}
        self.fda_index = np.array([i for i, _ in self.fda.values()], dtype=np.int64)
        self.fda_obs = np.zeros((len(self.fda), int(acfg.fda_block_ions) + 1), dtype=np.int64)
        self.fda_state = np.zeros(1 + len(self.fda), dtype=np.int64)
        self.profile = ProfileAccumulator(ranges, 1.0)
        self.prof_counts = np.zeros((0, len(self.profile.elements)))
        self.prof_lo = 0
        self.prof_seen = np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).min, 0])
        self.hm_edges = np.linspace(-det_r, det_r, 129)
        self.hitmap = np.zeros((128, 128), dtype=np.int64)
        # MRP windows counted: (the first chunk counted, the windows), the first group the
        # most counted ions of the first chunk, later ones ions that rose into the five
        self.groups: list[tuple[int, PeakWindows]] = []
        self.n_chunks = 0
        # windows of ions the pass counted from chunk k on, or not at all: ion -> (k, the
        # windows of a second read of chunks 0..k-1); see add_windows
        self.missing: dict[str, tuple[int, PeakWindows]] = {}
        self._reread = 0
        self._tried: set[str] = set()
        self.mrp_peaks: list[tuple[str, float]] = []
        self.slice_stride = max(1, math.ceil(n_hits / SLICE_POINTS))
        self.sl: dict[str, list[np.ndarray]] = {"x": [], "y": [], "z": [], "ion": []}
        self.multihit = MultiHitAccumulator(min(max_da, 200.0))  # events, correlation histogram
        self.n_roi = 0
        self.n_selected = 0
        self._no_mask = np.ones(1, dtype=bool)

    def add(self, c, select: Callable[[np.ndarray], np.ndarray] | None) -> None:
        """One IonChunk, less the hits ``select`` leaves out (which still count in the
        spectrum that ranks the MRP peaks, as every hit of the run does)."""
        job = self._prepare(c, select)
        if self.n_chunks:
            self._track()
        self._accumulate(job)
        if not self.n_chunks:
            self._track()
        self._windows_and_events(job)

    def consume(self, chunks, select: Callable[[np.ndarray], np.ndarray] | None) -> None:
        """:meth:`add` every chunk of the iterable ``chunks`` (a stream), in order: after the
        first, each chunk's pass kernel on one thread and its MRP windows and multi-hit
        events on another, while this one reads and derives the next chunk (the kernels
        release the GIL: two cores share the three). At most two chunks are alive at once:
        the one accumulated and the one read."""
        from concurrent.futures import ThreadPoolExecutor

        it = iter(chunks)
        first = next(it, None)
        if first is None:
            return
        self.add(first, select)
        with ThreadPoolExecutor(1, thread_name_prefix="apt-daq-ionpass") as a, \
                ThreadPoolExecutor(1, thread_name_prefix="apt-daq-ionpass-mrp") as b:
            pending: list = []
            for c in it:
                job = self._prepare(c, select)
                for f in pending:
                    f.result()  # in order; re-raises a worker's error here
                self._track()  # the workers idle: the spectrum of the chunks before this
                pending = [a.submit(self._accumulate, job), b.submit(self._windows_and_events,
                                                                     job)]
            for f in pending:
                f.result()

    def _prepare(self, c, select: Callable[[np.ndarray], np.ndarray] | None) -> tuple:
        """A chunk's selected hits, their m/n, range index, x, y, z, truth, ROI mask (None
        without a ROI) and the spectrum the kernel counts every hit in (empty when
        ``select`` is given: counted here, before the selection)."""
        hits, m, ion = c.hits, c.mass, c.ion
        x, y, z = c.derived["x"], c.derived["y"], c.derived["z"]
        truth = c.truth
        spec = self.spec.counts
        if select is not None:
            self.spec.add(m)
            spec = spec[:0]
            keep = np.asarray(select(hits), dtype=bool)
            hits, m, ion, x, y, z = hits[keep], m[keep], ion[keep], x[keep], y[keep], z[keep]
            truth = truth[keep] if truth is not None else None
            self.n_selected += len(hits)
        inside = self.roi.mask(x, y, z) if self.roi is not None else None
        return hits, m, ion, x, y, z, truth, inside, spec

    def _accumulate(self, job: tuple) -> None:
        """The pass kernel, slices and truth of a prepared chunk."""
        hits, m, ion, x, y, z, truth, inside, spec = job
        self.n_roi += int(inside.sum()) if inside is not None else len(m)
        ok = m >= self.tail.min_da  # the few ions above the ranges' spectrum (NaN: False)
        if inside is not None:
            ok &= inside
        if ok.any():
            above = m[ok]
            self.tail.cover(float(np.max(above, where=np.isfinite(above), initial=0.0)),
                            SPECTRUM_CAP_DA)
            self.tail.add(above)
        self._kernel(m, ion, z, hits["det_x"], hits["det_y"], inside, spec)
        s = slice(None, None, self.slice_stride)
        for k, a in (("x", x), ("y", y), ("z", z), ("ion", ion)):
            self.sl[k].append(a[s].copy())  # a copy: a view would keep the whole chunk
        if self.scorer is not None:
            self.scorer.add(truth, ion, x, y, z)

    def _windows_and_events(self, job: tuple) -> None:
        """The MRP windows and multi-hit events of a prepared chunk."""
        hits, m, inside = job[0], job[1], job[7]
        for _, windows in self.groups:
            windows.add(m, inside)
        self.multihit.add(hits["pulse"], m)
        self.n_chunks += 1

    def _track(self) -> None:
        """Before a chunk's windows are counted: the windows of the ions most counted so far
        (the first chunk: :data:`TRACKED_PEAKS` of them; later, any of the five not yet
        counted), counted from this chunk on."""
        by_ion = self._spectrum_counts_by_ion()
        ranked = sorted(by_ion, key=lambda n: -by_ion[n])  # main_peaks' order
        top = ranked[:TRACKED_PEAKS] if not self.n_chunks else ranked[:MRP_PEAKS]
        new = [n for n in top if n not in self._tried and by_ion[n] > 0]
        self._tried.update(new)  # (an ion main_peaks cannot name gets no window)
        windows = PeakWindows(self.ranges, new)
        if windows.peaks:
            self.groups.append((self.n_chunks, windows))

    def _kernel(self, m, ion, z, det_x, det_y, inside, spec) -> None:
        """:func:`pass_kernel` over the chunk, growing the profile's rows when it asks."""
        i = 0
        while True:
            i = pass_kernel(
                i, m, ion, z, det_x, det_y, inside if inside is not None else self._no_mask,
                inside is not None, spec, 1.0 / self.spec.bin_da, self.hist.counts,
                1.0 / self.hist.bin_da, self.fine.counts, 1.0 / self.fine.bin_da, self.rc_all,
                self.rc_roi, self.hm_edges, self.hitmap, self.ion_of_range, self.fda_index,
                self.fda_obs.shape[1] - 1, self.fda_obs, self.fda_state,
                self.prof_counts, self.prof_lo, self.profile.bin_nm, self.profile.atoms,
                self.prof_seen)  # fmt: skip
            if i >= len(m):
                return
            self._grow_profile(int(self.prof_seen[2]))

    def _grow_profile(self, b: int) -> None:
        """Rows of the depth profile to hold bin ``b``, with room for the bins that follow."""
        n = len(self.prof_counts)
        margin = max(64, n // 4)
        if n == 0:
            lo, hi = b - 8, b + margin
        elif b < self.prof_lo:
            lo, hi = b - margin, self.prof_lo + n
        else:
            lo, hi = self.prof_lo, b + margin
        grown = np.zeros((hi - lo, self.prof_counts.shape[1]))
        s = self.prof_lo - lo
        grown[s : s + n] = self.prof_counts
        self.prof_counts, self.prof_lo = grown, lo

    def finish(self) -> None:
        """The profile's rows trimmed to the bins taken, the FDA accumulators' block counts,
        and the five most counted ions' MRP windows (ranked on the spectrum of every hit)."""
        a, b = int(self.prof_seen[0]), int(self.prof_seen[1])
        if a <= b:
            self.profile.counts = self.prof_counts[a - self.prof_lo : b - self.prof_lo + 1]
            self.profile.z_min_bin = a
        n_fda = int(self.rc_roi.sum())
        for s, (_, fda_acc) in enumerate(self.fda.values()):
            fda_acc.observed = self.fda_obs[s].copy()
            fda_acc.n_ions = n_fda
        self.mrp_peaks = main_peaks(self.ranges, self._spectrum_counts_by_ion(), top=MRP_PEAKS)
        first = {n: k for k, w in self.groups for n in w.peaks}
        self.missing = {n: (first.get(n, self.n_chunks), PeakWindows(self.ranges, [n]))
                        for n, _ in self.mrp_peaks if first.get(n) != 0}  # fmt: skip

    def needs_reread(self) -> bool:
        """True while a chunk of a second read is wanted (:meth:`add_windows`)."""
        return any(self._reread < k for k, _ in self.missing.values())

    def add_windows(self, c, select: Callable[[np.ndarray], np.ndarray] | None) -> None:
        """The next chunk of a second read (from the run's first), into the windows of the
        five main ions the pass did not count from the first chunk on (:meth:`finish`)."""
        m, x, y, z = c.mass, c.derived["x"], c.derived["y"], c.derived["z"]
        if select is not None:
            keep = np.asarray(select(c.hits), dtype=bool)
            m, x, y, z = m[keep], x[keep], y[keep], z[keep]
        inside = self.roi.mask(x, y, z) if self.roi is not None else None
        for k, windows in self.missing.values():
            if self._reread < k:
                windows.add(m, inside)
        self._reread += 1

    @property
    def spectrum(self) -> MassHistogram:
        """The spectrum of the selected hits (1 mDa) over every m/n up to the highest (in
        steps of 50 Da, at most :data:`SPECTRUM_CAP_DA`): ``hist`` (to 20 Da above the last
        range: the composition's background windows) and the bins above it."""
        h = MassHistogram(self.hist.bin_da, self.hist.edges[-1])
        h.counts = np.concatenate([self.hist.counts, self.tail.counts])
        h.edges = np.concatenate([self.hist.edges, self.tail.edges[1:]])
        return h

    @property
    def mrp_win(self) -> list[WindowCounts]:
        """The MRP peaks' windows (after :meth:`finish`, and :meth:`add_windows` if asked)."""
        out = []
        for n, _ in self.mrp_peaks:
            parts = [w for _, w in self.groups if n in w]
            if n in self.missing:
                parts.append(self.missing[n][1])
            out.append(PeakWindows.window_of(parts, n))
        return out

    def _spectrum_counts_by_ion(self) -> dict[str, float]:
        """Counts per ion of the spectrum of every hit so far (bin centres in its ranges)."""
        rc_spec = counts_in_ranges(self.spec.counts, self.spec.edges, self.ranges)
        by_ion = {n: 0.0 for n in self.ranges.ions}
        for i, n in enumerate(self.ranges.names):
            by_ion[n] += float(rc_spec[i])
        return by_ion
